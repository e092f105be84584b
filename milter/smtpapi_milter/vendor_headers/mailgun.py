"""Mailgun's X-Mailgun-* headers (family "mailgun").

Mailgun's SMTP sending options (https://documentation.mailgun.com/docs/mailgun/user-manual/
sending-messages/pass-sending-options, and "Attaching Data to Messages" in its user manual,
https://github.com/mailgun/documentation/blob/master/source/user_manual.rst). Read:
``X-Mailgun-Tag`` (repeatable) as tags; ``X-Mailgun-Variables`` (a JSON object; several
are combined) as metadata; ``X-Mailgun-Campaign-Id`` as the campaign; ``X-Mailgun-Track``
(yes/no, both kinds), then ``X-Mailgun-Track-Clicks`` (yes/no/htmlonly) and
``X-Mailgun-Track-Opens`` (yes/no), which win over it as Mailgun's do. Every X-Mailgun-*
header is removed; those we cannot honour are refused, the harmless ones logged.
"""

from __future__ import annotations

from typing import Any

from .common import (
    Field,
    VendorSettings,
    choice,
    ignored,
    ignored_unknown,
    json_object,
    not_supported,
    one,
    text,
)

FAMILY = "mailgun"
PREFIX = "x-mailgun-"

_YES_NO = {"yes": True, "no": False, "true": True, "false": False, "1": True, "0": False}
_CLICKS = {**_YES_NO, "htmlonly": "htmlonly"}

# Headers that change delivery, refused unless they say no.
REFUSED = {
    "x-mailgun-drop-message": "test mode (not delivering) is Mailgun's; this mail would go out",
    "x-mailgun-require-tls": "the MTA's TLS policy decides (Postfix smtp_tls_security_level)",
    "x-mailgun-deliver-by": "mail goes out when it is received; schedule it before sending",
    "x-mailgun-delivery-time-optimize-period": "mail goes out when it is received",
    "x-mailgun-time-zone-localize": "mail goes out when it is received",
    "x-mailgun-recipient-variables": "substitutions are not made; send each recipient's text",
    "x-mailgun-template-name": "templates are not rendered; send the finished message",
    "x-mailgun-template-version": "templates are not rendered; send the finished message",
    "x-mailgun-template-variables": "templates are not rendered; send the finished message",
}
IGNORED = {
    "x-mailgun-dkim": "DKIM signing is the MTA's (OpenDKIM or similar)",
    "x-mailgun-sending-ip": "the MTA chooses the sending address",
    "x-mailgun-sending-ip-pool": "the MTA chooses the sending address",
    "x-mailgun-skip-verification": "the MTA's TLS policy decides",
}
READ = {
    "x-mailgun-tag",
    "x-mailgun-variables",
    "x-mailgun-campaign-id",
    "x-mailgun-track",
    "x-mailgun-track-clicks",
    "x-mailgun-track-opens",
}


def owns(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def parse(fields: list[Field]) -> VendorSettings:
    """The settings the X-Mailgun-* headers ask for; SmtpReplyError (550 5.6.0) if unusable."""
    unknown = []
    for name, raw in fields:
        key = name.lower()
        if key in REFUSED:
            if not _says_no(name, raw):
                raise not_supported(f"{name} header", REFUSED[key])
            ignored(name, "says no")
        elif key in IGNORED:
            ignored(name, IGNORED[key])
        elif key not in READ:
            unknown.append(name)
    ignored_unknown(unknown)
    settings: dict[str, Any] = {}
    track = _keyword(fields, "X-Mailgun-Track", _YES_NO)
    if track is not None:
        settings |= {"open_tracking": track, "click_tracking": track}
    opens = _keyword(fields, "X-Mailgun-Track-Opens", _YES_NO)
    if opens is not None:
        settings["open_tracking"] = opens
    clicks = _keyword(fields, "X-Mailgun-Track-Clicks", _CLICKS)
    if clicks == "htmlonly":
        settings |= {"click_tracking": True, "click_tracking_text": False}
    elif clicks is not None:
        settings["click_tracking"] = clicks
    campaign = one(fields, "X-Mailgun-Campaign-Id")
    tags = [text(n, v) for n, v in fields if n.lower() == "x-mailgun-tag"]
    return VendorSettings(
        FAMILY,
        campaign_id=text(*campaign) if campaign else None,
        tags=[t for t in tags if t] or None,
        metadata=_variables(fields),
        **settings,
    )


def _says_no(name: str, raw: bytes) -> bool:
    return text(name, raw).lower() in ("no", "false", "0", "")


def _keyword(fields: list[Field], name: str, table: dict[str, Any]) -> Any:
    field = one(fields, name)
    return None if field is None else choice(field[0], text(*field), table)


def _variables(fields: list[Field]) -> dict[str, Any] | None:
    """Every X-Mailgun-Variables object, combined in order (Mailgun combines them too)."""
    combined: dict[str, Any] | None = None
    for name, raw in fields:
        if name.lower() == "x-mailgun-variables":
            combined = (combined or {}) | json_object(name, text(name, raw))
    return combined
