"""Resolve what to track for one recipient (SPEC 3, precedence).

Per field: policy context variable > X-MSYS-API header > another vendor's header
(vendor_headers/, merged into the header this module reads) > configuration (which may itself
be a per-listener override). Schemes, tracking domain, link expiry and list_unsubscribe have no
header form; transactional has no configuration (mail is non-transactional unless told) and
skip_suppression is the header's alone, as in SparkPost.
Limits apply to the resolved value, whatever set it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from . import context as cv
from .config import SmtpapiConfig
from .xmsysapi import XMsysApi

log = structlog.get_logger("smtpapi_milter.settings")

SYSTEM_TAG_LIMIT = 100


@dataclass(frozen=True)
class TrackingSettings:
    """Everything the rewrite needs to know about one recipient's copy."""

    open_tracking: bool
    click_tracking: bool
    open_scheme: str
    click_scheme: str
    tracking_domain: str
    link_expiry: int
    initial_open_pixel: bool
    click_tracking_text: bool
    skip_url_text_links: bool
    # False only when a vendor header asks for text links alone (Postmark's TextOnly).
    click_tracking_html: bool = True
    campaign_id: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    customer_id: str = ""
    list_unsubscribe: bool = False  # add RFC 8058 headers (non-transactional mail only)
    transactional: bool = False  # SparkPost's options.transactional: no List-Unsubscribe,
    # and only "transactional" suppression entries apply
    skip_suppression: bool = False
    bounce_domain: str = ""  # the copy's envelope sender becomes a return path there

    @property
    def tracks_anything(self) -> bool:
        return self.open_tracking or self.click_tracking


class TagRegistry:
    """The system-wide set of distinct tags (Momentum: at most 100; the rest are ignored).

    This in-process registry serves one process; the event store provides a shared one
    with the same ``admit`` method.
    """

    def __init__(self, known: Iterable[str] = (), limit: int = SYSTEM_TAG_LIMIT):
        self._known = set(known)
        self._limit = limit
        self._lock = threading.Lock()

    def admit(self, tags: Iterable[str]) -> list[str]:
        """The tags that may be used; new tags past the limit are dropped and logged."""
        kept = []
        with self._lock:
            for tag in tags:
                if tag in self._known:
                    kept.append(tag)
                elif len(self._known) < self._limit:
                    self._known.add(tag)
                    kept.append(tag)
                else:
                    log.warning(
                        "tag ignored: system-wide limit reached", tag=tag, limit=self._limit
                    )
        return kept


def resolve(
    config: SmtpapiConfig,
    header: XMsysApi | None,
    variables: Mapping[str, str],
    tag_registry: TagRegistry,
    customer_id: str = "",
) -> TrackingSettings:
    """The settings for one recipient; raises SmtpReplyError (550 5.6.0) on a bad value."""
    header = header or XMsysApi()
    return TrackingSettings(
        open_tracking=_flag(
            variables, cv.OPEN_TRACKING, header.open_tracking, config.open_tracking_enabled
        ),
        click_tracking=_flag(
            variables, cv.CLICK_TRACKING, header.click_tracking, config.click_tracking_enabled
        ),
        open_scheme=_policy_or(
            variables, cv.OPEN_TRACKING_SCHEME, cv.parse_scheme, config.open_tracking_scheme
        ),
        click_scheme=_policy_or(
            variables, cv.CLICK_TRACKING_SCHEME, cv.parse_scheme, config.click_tracking_scheme
        ),
        tracking_domain=_policy_or(
            variables, cv.TRACKING_DOMAIN, cv.parse_domain, config.tracking_domain
        ),
        link_expiry=_policy_or(
            variables, cv.TRACKING_LINK_EXPIRY, cv.parse_expiry, config.tracking_link_expiry
        ),
        initial_open_pixel=config.initial_open_pixel_tracking,
        click_tracking_text=_or(header.click_tracking_text, config.click_tracking_text),
        click_tracking_html=_or(header.click_tracking_html, True),
        skip_url_text_links=config.skip_url_text_links,
        campaign_id=cv.check_campaign_id(_campaign(variables, header)),
        tags=tuple(_tags(variables, header, tag_registry)),
        metadata=_metadata(variables, header),
        customer_id=variables.get(cv.CUSTOMER_ID, customer_id),
        list_unsubscribe=_flag(variables, cv.LIST_UNSUBSCRIBE, None, config.list_unsubscribe),
        transactional=_flag(variables, cv.TRANSACTIONAL, header.transactional, False),
        skip_suppression=bool(header.skip_suppression),
        bounce_domain=_policy_or(
            variables, cv.BOUNCE_DOMAIN, cv.parse_bounce_domain, config.bounce_domain
        ),
    )


def _flag(variables: Mapping[str, str], name: str, header: bool | None, default: bool) -> bool:
    if name in variables:
        return cv.parse_bool(name, variables[name])
    return default if header is None else header


def _or(header: bool | None, default: bool) -> bool:
    return default if header is None else header


def _policy_or(variables: Mapping[str, str], name: str, parse: Any, default: Any) -> Any:
    return parse(name, variables[name]) if name in variables else default


def _campaign(variables: Mapping[str, str], header: XMsysApi) -> str:
    if cv.CAMPAIGN_ID in variables:
        return variables[cv.CAMPAIGN_ID]
    return header.campaign_id or ""


def _metadata(variables: Mapping[str, str], header: XMsysApi) -> dict[str, Any] | None:
    if cv.METADATA in variables:
        metadata = cv.parse_metadata(cv.METADATA, variables[cv.METADATA])
    else:
        metadata = header.metadata
    return None if metadata is None else cv.check_metadata(metadata)


def _tags(variables: Mapping[str, str], header: XMsysApi, registry: TagRegistry) -> list[str]:
    from_policy = cv.TAGS in variables
    tags = cv.parse_tags(cv.TAGS, variables[cv.TAGS]) if from_policy else header.tags or []
    tags = list(dict.fromkeys(tags))  # a repeated tag counts once
    if len(tags) > cv.TAGS_PER_RECIPIENT:
        log.warning(
            "tags ignored: more than 10 per recipient", ignored=tags[cv.TAGS_PER_RECIPIENT :]
        )
        tags = tags[: cv.TAGS_PER_RECIPIENT]
    return registry.admit(tags) if tags else []
