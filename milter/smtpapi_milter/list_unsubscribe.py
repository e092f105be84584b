"""RFC 8058 one-click unsubscribe headers (SPEC 14): what a copy's header gains.

Gmail and Yahoo require bulk mail to carry ``List-Unsubscribe`` with an HTTPS URI and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the mailbox provider then POSTs
``List-Unsubscribe=One-Click`` to that URI when the reader clicks its own unsubscribe button
(the tracker's ``/u/`` route, tracker/unsubscribe.py). The URI carries an ``unsubscribe``
token: the click token's construction and expiry, bound to this copy's recipient and message.

Only a copy that names its recipient gets one: a shared body (several recipients, one copy)
has nobody to bind the token to, and an unsubscribe of nobody helps nobody. Transactional
mail gets none (SparkPost's ``options.transactional``). A message that is DKIM-signed before
it reaches us is left alone unless ``track_dkim_signed``: replacing a signed List-Unsubscribe
breaks the signature.

A sender's own entries (``<mailto:...>``, ``<https://...>``) are kept after ours, in the one
List-Unsubscribe header the message leaves with (RFC 2369: clients use the leftmost entry
they support, so one-click lands here and the mailto stays for clients without one-click).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

from .config import Config
from .envelope import HeaderEdit
from .settings import TrackingSettings
from .tokens import TokenCodec, TrackingData
from .xmsysapi import unfold

HEADER = "List-Unsubscribe"
POST_HEADER = "List-Unsubscribe-Post"
ONE_CLICK = b"List-Unsubscribe=One-Click"
PATH = "/u/"
# RFC 5322's hard limit for one line, the field name and ": " included.
_LINE_LIMIT = 998
# One RFC 2369 entry: an angle-bracketed URI; whitespace inside is not part of it.
_ENTRY = re.compile(rb"<([^<>]*)>")
_SPACE = re.compile(rb"\s+")


def offered(
    settings: TrackingSettings,
    recipient: str | None,
    headers: list[tuple[str, bytes]],
    config_track_dkim_signed: bool,
) -> bool:
    """Whether this copy gets our List-Unsubscribe (see the module's docstring for why not)."""
    if not settings.list_unsubscribe or settings.transactional or not recipient:
        return False
    if config_track_dkim_signed:
        return True
    return not any(name.lower() == "dkim-signature" for name, _ in headers)


class _HasCodec(Protocol):
    config: Config
    codec: TokenCodec


def url(pipeline: _HasCodec, settings: TrackingSettings, base: TrackingData) -> str:
    """The copy's one-click URL; the token carries what its click tokens carry."""
    include = pipeline.config.engagement_tracker.click_tracking_include_metadata
    data = dataclasses.replace(
        base, kind="unsubscribe", metadata=base.metadata if include else None
    )
    token = pipeline.codec.encode(data)
    return f"{settings.click_scheme}://{settings.tracking_domain}{PATH}{token}"


def header_edits(headers: list[tuple[str, bytes]], our_url: str) -> list[HeaderEdit]:
    """The edits that leave one List-Unsubscribe (ours first, the sender's entries after)
    and one List-Unsubscribe-Post.

    Deletions come from the last occurrence down, so no index moves under a later edit
    whichever way the MTA counts.
    """
    ours = b"<" + our_url.encode("ascii") + b">"
    entries = [ours]
    for value in _values(headers, HEADER):
        for match in _ENTRY.finditer(unfold(value)):
            entry = b"<" + _SPACE.sub(b"", match.group(1)) + b">"
            if entry != b"<>" and entry not in entries:
                entries.append(entry)
    edits = _one_field(headers, HEADER, _joined(entries))
    posts = _values(headers, POST_HEADER)
    if not posts or unfold(posts[0]) != ONE_CLICK or len(posts) > 1:
        edits += _one_field(headers, POST_HEADER, ONE_CLICK)
    return edits


def _values(headers: list[tuple[str, bytes]], name: str) -> list[bytes]:
    lowered = name.lower()
    return [value for key, value in headers if key.lower() == lowered]


def _one_field(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[HeaderEdit]:
    """Edits that make ``name`` occur once, with ``value``."""
    present = len(_values(headers, name))
    if not present:
        return [HeaderEdit(name, 0, value)]
    edits = [HeaderEdit(name, index, None) for index in range(present, 1, -1)]
    return [*edits, HeaderEdit(name, 1, value)]


def _joined(entries: list[bytes]) -> bytes:
    """Entries on one line, folded between entries only where a line would be too long."""
    value = b", ".join(entries)
    if len(HEADER) + 2 + len(value) <= _LINE_LIMIT:
        return value
    return b",\n ".join(entries)
