"""SendGrid's X-SMTPAPI header (family "x-smtpapi").

One JSON object (https://www.twilio.com/docs/sendgrid/for-developers/sending-email/
building-an-x-smtpapi-header). Read: ``category`` (a string or up to 10 strings) as tags,
``unique_args`` (an object) as metadata, and the filters (https://www.twilio.com/docs/sendgrid/
for-developers/sending-email/smtp-filters) ``clicktrack`` (``enable``, ``enable_text``),
``opentrack`` (``enable``) and ``bypass_list_management`` (``enable``: SparkPost's
skip_suppression). The other fields are either refused (they change whom the mail reaches,
when, or what it says, which we cannot do) or ignored and logged (nothing is lost by not
acting on them); the README lists which.
"""

from __future__ import annotations

from typing import Any

from ..replies import invalid
from .common import (
    Field,
    VendorSettings,
    ignored,
    ignored_unknown,
    json_object,
    not_supported,
    one,
    text,
)

FAMILY = "x-smtpapi"
HEADER = "X-SMTPAPI"

# Fields that change delivery: refused when they say anything (an empty value says nothing).
REFUSED = {
    "to": "it lists recipients; give each one in RCPT TO",
    "sub": "substitutions are not made; send each recipient's text already filled in",
    "section": "substitutions are not made; send each recipient's text already filled in",
    "send_at": "mail goes out when it is received; schedule it before sending",
    "send_each_at": "mail goes out when it is received; schedule it before sending",
}
# Fields whose absence of effect harms nothing here.
IGNORED = {
    "asm_group_id": "unsubscribe groups are SendGrid's; the suppression list applies instead",
    "ip_pool": "the MTA chooses the sending address",
}
READ = {"category", "unique_args", "filters"}

# Filters that only change accounting or signing: ignored when enabled.
IGNORED_FILTERS = {"dkim": "DKIM signing is the MTA's (OpenDKIM or similar)"}
_FLAGS = {0: False, 1: True, "0": False, "1": True, "false": False, "true": True}


def owns(name: str) -> bool:
    return name.lower() == "x-smtpapi"


def parse(fields: list[Field]) -> VendorSettings:
    """The settings X-SMTPAPI asks for; SmtpReplyError (550 5.6.0) if it cannot be used."""
    field = one(fields, HEADER)
    assert field is not None
    data = json_object(HEADER, text(HEADER, field[1]))
    unknown = []
    for key, value in data.items():
        if key in REFUSED:
            if value not in (None, "", [], {}):
                raise not_supported(f"{HEADER} '{key}'", REFUSED[key])
        elif key in IGNORED:
            ignored(f"{HEADER} {key}", IGNORED[key])
        elif key not in READ:
            unknown.append(f"{HEADER} {key}")
    ignored_unknown(unknown, "field")
    settings: dict[str, Any] = {}
    filters = _object(data, "filters", "filters")
    for name, spec in filters.items():
        settings |= _filter(name, spec)
    unique_args = data.get("unique_args")
    if unique_args is not None and not isinstance(unique_args, dict):
        raise invalid(f"{HEADER} 'unique_args' must be of type 'json object'")
    return VendorSettings(
        FAMILY, tags=_category(data.get("category")), metadata=unique_args, **settings
    )


def _category(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise invalid(f"{HEADER} 'category' must be a string or a json array of strings")


def _object(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{HEADER} '{path}' must be of type 'json object'")
    return value


def _flag(settings: dict[str, Any], key: str, path: str) -> bool | None:
    """SendGrid's 0|1 (its libraries also write true/false, and strings of either)."""
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip().lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, str)) and value in _FLAGS:
        return _FLAGS[value]
    raise invalid(f"{HEADER} '{path}.{key}' must be 0 or 1")


def _filter(name: str, spec: Any) -> dict[str, Any]:
    # The name is the sender's: replies quote it in printable ASCII, shortened.
    shown = ascii(name)[1:-1][:40]
    path = f"filters.{shown}"
    if not isinstance(spec, dict):
        raise invalid(f"{HEADER} '{path}' must be of type 'json object'")
    settings = _object(spec, "settings", f"{path}.settings")
    path += ".settings"
    enable = _flag(settings, "enable", path)
    if name == "clicktrack":
        text_links = _flag(settings, "enable_text", path)
        found = {"click_tracking": enable, "click_tracking_text": text_links}
        return {k: v for k, v in found.items() if v is not None}
    if name == "opentrack":
        if enable and settings.get("replace") not in (None, ""):
            raise not_supported(f"{HEADER} '{path}.replace'", "the open pixel goes at the end")
        return {} if enable is None else {"open_tracking": enable}
    if name == "bypass_list_management":
        return {} if enable is None else {"skip_suppression": enable}
    if name in IGNORED_FILTERS:
        ignored(f"{HEADER} {path}", IGNORED_FILTERS[name])
    elif enable:
        raise not_supported(
            f"{HEADER} filter '{shown}'",
            "it would change the message or its delivery; disable it",
        )
    else:
        ignored(f"{HEADER} {path}", "filter not enabled")
    return {}
