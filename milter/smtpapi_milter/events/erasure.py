"""Erasing a recipient (privacy requests), and keeping them erased.

``smtpapi-milter erase ADDR`` and ``DELETE /api/v1/recipients/{ADDR}/events`` delete every
stored event of ``ADDR`` and write the erasure down, in one transaction, in
``erased_recipients`` (schema migration 4). From then on, an event of that recipient is not
stored at all: links and pixels in mail already sent keep working (the reader is still
redirected), but nothing is recorded. Not storing it without the address either: the rest of
such an event (message id, transmission id, IP address, user agent) still points at the
person, and an event with an empty ``rcpt_to`` would reach webhook consumers that key on it.
Retained as is: counts in reports no longer include what the erased recipient did.

The erasure list holds no address: each entry is the SHA-256 of a fixed label and the
lower-cased address. A keyed HMAC would hide which known address was erased from someone who
reads the database, but every process that records events (milters and trackers, on several
machines when they share PostgreSQL) and the ``erase`` command would need the same secret, and
a secret per state directory silently breaks the list on the second node. The hash keeps
nothing that was not already guessable from the address itself, and the database is already
private (0600 file, PostgreSQL credentials).

The check runs inside the transaction that inserts events, and an erase waits for inserts in
flight (SQLite: one writer at a time; PostgreSQL: the store's "cursor" lock taken exclusively),
so no event of the recipient can be committed after the erase without being checked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

log = structlog.get_logger("smtpapi_milter.events.erasure")

ERASED_TABLE = "CREATE TABLE erased_recipients (digest TEXT PRIMARY KEY, erased_at {real} NOT NULL)"
_LABEL = b"smtpapi-milter erased recipient\x00"
# RFC 5321 lets RCPT TO name the postmaster without a domain; every other address has one.
_DOMAINLESS = frozenset({"postmaster"})
_DIGESTS_PER_QUERY = 500  # well under every SQLite build's limit on parameters
# Recipients in one insert past which the list is first asked whether it holds anything:
# one query more for a large batch, none for the milter's and the tracker's small ones.
_PROBE_FIRST = 100


class NotAnAddress(ValueError):
    """The text given to erase is no recipient address; nothing was erased."""


def erasable_address(text: str) -> str:
    """``text`` as stored in ``rcpt_to`` (trimmed, lower-cased), or NotAnAddress.

    Refused: empty or blank (it used to match every event without a recipient), inner white
    space or control characters, and anything without a local part, ``@`` and a domain."""
    address = text.strip()
    if not address:
        raise NotAnAddress(
            "refusing to erase an empty address (it would match every event "
            "without a recipient): give the recipient's address, local@domain"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in address):
        raise NotAnAddress(f"refusing to erase {address!r}: white space or control characters")
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) and address.lower() not in _DOMAINLESS:
        raise NotAnAddress(f"refusing to erase {address!r}: not an address (local@domain)")
    return address.lower()


def recipient_digest(rcpt_to: str) -> str:
    """The erasure list's key for a stored (lower-cased) ``rcpt_to``."""
    return hashlib.sha256(_LABEL + rcpt_to.encode("utf-8", "surrogatepass")).hexdigest()


def erase(cur: Any, sql: Callable[[str], str], address: str) -> int:
    """Write the erasure down and delete the recipient's events, in the caller's transaction
    (which holds off concurrent inserts); returns how many events were deleted."""
    cur.execute(
        sql(
            "INSERT INTO erased_recipients (digest, erased_at) VALUES (?, ?)"
            " ON CONFLICT (digest) DO NOTHING"
        ),
        [recipient_digest(address), time.time()],
    )
    cur.execute(sql("DELETE FROM events WHERE rcpt_to = ?"), [address])
    return cur.rowcount


def without_erased(
    cur: Any, sql: Callable[[str], str], rows: Sequence[tuple[Any, ...]], column: int
) -> Sequence[tuple[Any, ...]]:
    """``rows`` less those whose ``rcpt_to`` (at index ``column``) was erased; indexed
    queries inside the caller's insert transaction (one for a small batch)."""
    recipients = [rcpt for rcpt in {row[column] for row in rows} if rcpt]
    if not recipients:
        return rows
    if len(recipients) > _PROBE_FIRST and not _any_erased(cur, sql):
        # A large batch (the log follower's: tens of thousands of events) and nobody ever
        # erased, as on most installations: no digest to make, no list to search.
        return rows
    # Each recipient hashed once, however many of its events the batch holds.
    digests = {rcpt: recipient_digest(rcpt) for rcpt in recipients}
    wanted = sorted(set(digests.values()))
    erased: set[str] = set()
    for start in range(0, len(wanted), _DIGESTS_PER_QUERY):
        chunk = wanted[start : start + _DIGESTS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        cur.execute(sql(f"SELECT digest FROM erased_recipients WHERE digest IN ({marks})"), chunk)
        erased.update(row[0] for row in cur.fetchall())
    if not erased:
        return rows
    kept = [row for row in rows if not row[column] or digests[row[column]] not in erased]
    log.info("events of erased recipients not stored", events=len(rows) - len(kept))
    return kept


def _any_erased(cur: Any, sql: Callable[[str], str]) -> bool:
    cur.execute(sql("SELECT 1 FROM erased_recipients LIMIT 1"))
    return cur.fetchone() is not None
