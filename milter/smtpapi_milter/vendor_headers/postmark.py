"""Postmark's X-PM-* headers (family "postmark").

Postmark's SMTP headers: ``X-PM-Tag`` (one tag,
https://postmarkapp.com/developer/user-guide/send-email-with-smtp), ``X-PM-Metadata-<key>``
(one metadata field each, https://postmarkapp.com/support/article/1125-custom-metadata-faq-1),
``X-PM-TrackOpens`` (true/false, https://postmarkapp.com/developer/user-guide/tracking-opens/
tracking-opens-per-email) and ``X-PM-TrackLinks`` (None, HtmlAndText, HtmlOnly, TextOnly,
https://postmarkapp.com/support/article/1058-how-do-i-enable-link-tracking). Every X-PM-*
header is removed; the others (X-PM-Message-Stream, X-PM-KeepID, ...) are ignored and logged:
none of them changes whom the mail reaches or what it says.
"""

from __future__ import annotations

from typing import Any

from ..replies import invalid
from .common import Field, VendorSettings, choice, ignored, ignored_unknown, one, text

FAMILY = "postmark"
PREFIX = "x-pm-"
METADATA_PREFIX = "x-pm-metadata-"

_TRUE_FALSE = {"true": True, "false": False}


# What each TrackLinks value sets: click tracking, and which parts' links.
def _links(html: bool, text: bool) -> dict[str, bool]:
    return {"click_tracking": True, "click_tracking_html": html, "click_tracking_text": text}


_LINKS = {
    "None": {"click_tracking": False},
    "HtmlAndText": _links(html=True, text=True),
    "HtmlOnly": _links(html=True, text=False),
    "TextOnly": _links(html=False, text=True),
}
IGNORED = {
    "x-pm-message-stream": "message streams are Postmark's; this MTA has one",
    "x-pm-keepid": "the Message-ID is always kept",
}
READ = {"x-pm-tag", "x-pm-trackopens", "x-pm-tracklinks"}


def owns(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def parse(fields: list[Field]) -> VendorSettings:
    """The settings the X-PM-* headers ask for; SmtpReplyError (550 5.6.0) if unusable."""
    unknown = []
    for name, _ in fields:
        key = name.lower()
        if key in IGNORED:
            ignored(name, IGNORED[key])
        elif key not in READ and not key.startswith(METADATA_PREFIX):
            unknown.append(name)
    ignored_unknown(unknown)
    settings: dict[str, Any] = {}
    opens = one(fields, "X-PM-TrackOpens")
    if opens is not None:
        settings["open_tracking"] = choice(opens[0], text(*opens), _TRUE_FALSE)
    links = one(fields, "X-PM-TrackLinks")
    if links is not None:
        settings |= choice(links[0], text(*links), _LINKS)
    tag = one(fields, "X-PM-Tag")
    tag_text = text(*tag) if tag else ""
    return VendorSettings(
        FAMILY, tags=[tag_text] if tag_text else None, metadata=_metadata(fields), **settings
    )


def _metadata(fields: list[Field]) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    seen: set[str] = set()
    for name, raw in fields:
        if not name.lower().startswith(METADATA_PREFIX):
            continue
        key = name[len(METADATA_PREFIX) :]
        if not key:
            raise invalid(f"{name} header names no metadata key (X-PM-Metadata-<key>)")
        if key.lower() in seen:
            raise invalid(f"message has more than one {name} header")
        seen.add(key.lower())
        metadata[key] = text(name, raw)
    return metadata or None
