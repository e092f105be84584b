"""Context variables: the string-valued knobs policies set (SPEC 3, seed 003).

Momentum's context variables are always strings; a policy that sets anything else has a
bug, so :meth:`Variables.set` raises at once instead of guessing. Values are checked when
they are used (per recipient, in :mod:`settings`), and a bad value rejects the message with
550 5.6.0 naming the variable, because the sender's policy asked for something impossible.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .replies import invalid

BOUNCE_DOMAIN = "smtpapi_bounce_domain"
CAMPAIGN_ID = "smtpapi_campaign_id"
CLICK_TRACKING = "smtpapi_click_tracking"
CLICK_TRACKING_SCHEME = "smtpapi_click_tracking_scheme"
LIST_UNSUBSCRIBE = "smtpapi_list_unsubscribe"
METADATA = "smtpapi_metadata"
OPEN_TRACKING = "smtpapi_open_tracking"
OPEN_TRACKING_SCHEME = "smtpapi_open_tracking_scheme"
TAGS = "smtpapi_tags"
TRANSACTIONAL = "smtpapi_transactional"
TRACKING_DOMAIN = "smtpapi_tracking_domain"
TRACKING_LINK_EXPIRY = "smtpapi_tracking_link_expiry"
CUSTOMER_ID = "mo_customer_id"

SMTPAPI_VARIABLES = frozenset(
    {
        BOUNCE_DOMAIN,
        CAMPAIGN_ID,
        CLICK_TRACKING,
        CLICK_TRACKING_SCHEME,
        LIST_UNSUBSCRIBE,
        METADATA,
        OPEN_TRACKING,
        OPEN_TRACKING_SCHEME,
        TAGS,
        TRACKING_DOMAIN,
        TRACKING_LINK_EXPIRY,
        TRANSACTIONAL,
    }
)

CAMPAIGN_ID_LIMIT = 64
METADATA_LIMIT = 200
TAGS_PER_RECIPIENT = 10

_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


class Variables(Mapping[str, str]):
    """One scope of context variables, layered over an outer scope.

    Reads fall through to the outer scope (recipient → message → connection), writes stay
    in this scope: a variable set for one recipient never leaks to the next.
    """

    def __init__(self, outer: Variables | None = None):
        self._own: dict[str, str] = {}
        self._outer = outer

    def set(self, name: str, value: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("context variable names are non-empty strings")
        if not isinstance(value, str):
            raise TypeError(
                f"context variable {name} must be set to a string, not {type(value).__name__}"
                " (context variables are always strings, as in Momentum)"
            )
        self._own[name] = value

    def child(self) -> Variables:
        return Variables(self)

    # Settings ask each recipient's scope (three deep) for a dozen names a message, most of
    # them set nowhere: Mapping's ``in`` and ``get`` would go through __getitem__ and a
    # KeyError raised up every scope; walked in a loop instead (bench/milter_cpu.py
    # --level pipeline --load bulk: 0.193 -> 0.184 ms of CPU a message, two runs each).
    def _holder(self, name: object) -> dict[str, str] | None:
        """The innermost scope's own variables that set ``name``; None if none does."""
        scope: Variables | None = self
        while scope is not None:
            if name in scope._own:
                return scope._own
            scope = scope._outer
        return None

    def __getitem__(self, name: str) -> str:
        own = self._holder(name)
        if own is None:
            raise KeyError(name)
        return own[name]

    def __contains__(self, name: object) -> bool:
        return self._holder(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        own = self._holder(name)
        return default if own is None else own[name]

    def __iter__(self) -> Iterator[str]:
        seen = set(self._own)
        yield from self._own
        if self._outer is not None:
            yield from (k for k in self._outer if k not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise invalid(f"{name} context must be 1, 0, true or false")


def parse_scheme(name: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in ("http", "https"):
        raise invalid(f"{name} context must be http or https")
    return lowered


def parse_domain(name: str, value: str) -> str:
    domain = value.strip()
    if not domain or any(c in domain for c in "/?#@ \t\r\n\\\"'<>"):
        raise invalid(f"{name} context must be a host name with an optional port")
    return domain


def parse_bounce_domain(name: str, value: str) -> str:
    """A return-path domain, or "" (off for this message)."""
    domain = value.strip()
    if domain and (any(c in domain for c in "/?#@:[] \t\r\n\\\"'<>")):
        raise invalid(f"{name} context must be a domain name, or empty for none")
    return domain


def parse_expiry(name: str, value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise invalid(f"{name} context must be a number of seconds (0 = never)")
    return int(text)


def parse_metadata(name: str, value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise invalid(f"{name} context must be a JSON object") from None
    if not isinstance(data, dict):
        raise invalid(f"{name} context must be a JSON object")
    return data


def parse_tags(name: str, value: str) -> list[str]:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise invalid(f"{name} context must be a JSON array of strings") from None
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise invalid(f"{name} context must be a JSON array of strings")
    return data


def check_campaign_id(campaign_id: str) -> str:
    if len(campaign_id.encode("utf-8", "surrogatepass")) > CAMPAIGN_ID_LIMIT:
        raise invalid(f"{CAMPAIGN_ID} context is limited to {CAMPAIGN_ID_LIMIT} bytes")
    return campaign_id


def serialize_metadata(metadata: dict[str, Any]) -> str:
    """The canonical, compact serialization whose size the 200-byte limit counts."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if len(serialize_metadata(metadata).encode("utf-8", "surrogatepass")) > METADATA_LIMIT:
        raise invalid(f"{METADATA} context is limited to {METADATA_LIMIT} bytes")
    return metadata
