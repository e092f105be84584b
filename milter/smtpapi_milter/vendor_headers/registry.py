"""Which header families a message carries, which are read, and how they combine.

Precedence, per field: policy (settings.py) > X-MSYS-API > the vendor header > configuration.
At most one vendor family per message: two (say X-SMTPAPI and X-Mailgun-Tag) would each claim
the same fields with nothing to say which the sender meant, so the message is refused. Every
accepted family's headers are deleted from the delivered message; a family not accepted is
not even looked at, and its headers pass through untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from .. import xmsysapi
from ..envelope import HeaderEdit
from ..replies import invalid
from . import mailgun, postmark, sendgrid
from .common import Field, VendorSettings

XMSYSAPI = "x-msys-api"
FAMILIES = {module.FAMILY: module for module in (sendgrid, mailgun, postmark)}
FAMILY_NAMES = (XMSYSAPI, *FAMILIES)


@dataclass(frozen=True)
class HeadersRead:
    """What a message's accepted headers say."""

    xmsysapi: xmsysapi.XMsysApi | None  # X-MSYS-API alone: what policies see (ctx.xmsysapi)
    settings: xmsysapi.XMsysApi | None  # X-MSYS-API over the vendor's: what settings resolve
    edits: list[HeaderEdit]  # deletes every accepted family's headers
    family: str | None = None  # the vendor family read, if any


def read(headers: list[Field], accepted: Iterable[str]) -> HeadersRead:
    """Parse the accepted families' headers; SmtpReplyError (550 5.6.0) if they cannot be used."""
    accepted = set(accepted)
    header, edits = None, []
    if XMSYSAPI in accepted:
        values = [value for name, value in headers if name.lower() == XMSYSAPI]
        if len(values) > 1:
            raise invalid("message has more than one X-MSYS-API header")
        if values:
            header = xmsysapi.parse(values[0])
            edits.append(HeaderEdit(xmsysapi.HEADER_NAME, 1, None))
    vendors = [(family, module) for family, module in FAMILIES.items() if family in accepted]
    found: dict[str, list[Field]] = {}
    for name, value in headers if vendors else ():  # most sites accept X-MSYS-API alone
        for family, module in vendors:
            if module.owns(name):
                found.setdefault(family, []).append((name, value))
    if not found:
        return HeadersRead(header, header, edits)
    if len(found) > 1:
        first, second = (fields[0][0] for fields in list(found.values())[:2])
        raise invalid(
            f"message has headers of two vendors, {first} and {second}: use one vendor's headers"
        )
    ((family, fields),) = found.items()
    vendor = FAMILIES[family].parse(fields)
    return HeadersRead(header, merge(header, vendor), edits + deletions(fields), family)


def field_deletions(headers: list[Field], accepted: Iterable[str]) -> list[HeaderEdit]:
    """Edits deleting every field of every accepted family, without reading any: for a
    message going out as it came (``on_error = "accept"``), which still never carries them."""
    accepted = set(accepted)
    owned = [
        (name, value)
        for name, value in headers
        if (XMSYSAPI in accepted and name.lower() == XMSYSAPI)
        or any(f in accepted and module.owns(name) for f, module in FAMILIES.items())
    ]
    return deletions(owned)


def merge(header: xmsysapi.XMsysApi | None, vendor: VendorSettings) -> xmsysapi.XMsysApi:
    """X-MSYS-API's fields, each one it leaves unset taken from the vendor's headers."""
    header = header or xmsysapi.XMsysApi()
    taken = {
        f.name: getattr(vendor, f.name)
        for f in dataclasses.fields(vendor)
        if f.name != "family" and getattr(header, f.name) is None
    }
    return dataclasses.replace(header, **taken)


def deletions(fields: list[Field]) -> list[HeaderEdit]:
    """Edits deleting ``fields``: each name's last occurrence first, so that the indexes stay
    right whether or not the MTA still counts fields already deleted (libmilter's 1-based
    index)."""
    counts: dict[str, tuple[str, int]] = {}
    for name, _ in fields:
        spelled, count = counts.get(name.lower(), (name, 0))
        counts[name.lower()] = (spelled, count + 1)
    return [
        HeaderEdit(spelled, index, None)
        for spelled, count in counts.values()
        for index in range(count, 0, -1)
    ]
