"""What every vendor family's parser shares: its result, and strict readers of header text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog

from ..replies import invalid
from ..xmsysapi import decode_value

log = structlog.get_logger("smtpapi_milter.vendor_headers")

# A header field as the MTA gave it: name, raw value (folds kept).
Field = tuple[str, bytes]


@dataclass(frozen=True)
class VendorSettings:
    """What one vendor's headers ask for; None means they do not say."""

    family: str
    campaign_id: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    open_tracking: bool | None = None
    click_tracking: bool | None = None
    click_tracking_html: bool | None = None
    click_tracking_text: bool | None = None
    skip_suppression: bool | None = None


def text(name: str, raw: bytes) -> str:
    """A header's value as text: unfolded, RFC 2047 decoded, trimmed (550 5.6.0 if it cannot)."""
    return decode_value(raw, name).strip()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_object(name: str, value: str) -> dict[str, Any]:
    """``value`` parsed as a JSON object, or 550 5.6.0 naming the header."""
    try:
        data = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise invalid(f"{name} is not valid JSON: {reason}"[:200]) from None
    if not isinstance(data, dict):
        raise invalid(f"{name} must be of type 'json object'")
    return data


def choice(name: str, value: str, table: dict[str, Any]) -> Any:
    """The meaning of a keyword value (case-insensitive), or 550 5.6.0 listing the keywords
    as ``table`` spells them."""
    key = value.strip().lower()
    for word, meaning in table.items():
        if word.lower() == key:
            return meaning
    words = ", ".join(table)
    raise invalid(f"{name} must be one of {words}, not {ascii(value)[:60]}")


def one(fields: list[Field], name: str) -> Field | None:
    """The single field called ``name`` (case-insensitive), None if absent; a second one is
    refused, as a second X-MSYS-API is: which one the sender meant is anyone's guess."""
    found = [f for f in fields if f[0].lower() == name.lower()]
    if len(found) > 1:
        raise invalid(f"message has more than one {found[0][0]} header")
    return found[0] if found else None


def ignored(header: str, reason: str) -> None:
    """A vendor instruction we do not act on because doing nothing is harmless: logged."""
    log.info("vendor header ignored", header=header, reason=reason)


def ignored_unknown(names: list[str], what: str = "header") -> None:
    """Names we do not know, in one log line however many a hostile message carries."""
    if names:
        shown = ", ".join(n[:60] for n in names[:10]) + (", ..." if len(names) > 10 else "")
        log.info("vendor header ignored", header=shown, reason=f"not a {what} smtpapi-milter reads")


def not_supported(what: str, why: str) -> Exception:
    """550 5.6.0 for an instruction that would change delivery in a way we cannot honour."""
    return invalid(f"{what} is not supported here: {why}"[:300])
