"""The suppression list in the event store: who must not get mail, and of which kind (SPEC 14).

SparkPost's shape, so lists move between the two (https://developers.sparkpost.com/api/suppression-list/):
an entry is ``recipient`` (case-insensitive: stored lower-cased), ``type`` (``transactional`` or
``non_transactional``), ``source``, ``description``, ``created`` and ``updated``; one entry per
(recipient, type), so a recipient suppressed for both kinds has two entries. As in SparkPost, a
``non_transactional`` entry blocks non-transactional mail only and a ``transactional`` entry
transactional mail only.

Sources are stored as snake_case words (``list_unsubscribe``, ``link_unsubscribe``, ``bounce``,
``spam_complaint``, ``manual``), the values of this project's events; SparkPost shows the same
sources as "List Unsubscribe", "Unsubscribe Link", "Bounce Rule", "Spam Complaint" and "Manually
Added". Times are unix seconds (as every time in the store); the API renders them ISO 8601.

Every function takes an open EventStore and works in its transactions. Given ``cur`` (a cursor
of the caller's write transaction, from ``store.transaction(..., write=True)``), the change
commits with the caller's own writes: the tracker's list_unsubscribe event and the maillog
follower's bounce event and log position are durable in the same commit as the entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..events.store import EventStore

T = TypeVar("T")

TRANSACTIONAL = "transactional"
NON_TRANSACTIONAL = "non_transactional"
TYPES = (TRANSACTIONAL, NON_TRANSACTIONAL)
SOURCES = ("list_unsubscribe", "link_unsubscribe", "bounce", "spam_complaint", "manual")
DESCRIPTION_LIMIT = 1024  # bounds a row; an explanation needs no more
DEFAULT_LIMIT = 1000
_PER_QUERY = 500  # recipients per IN (...) query: well under every SQLite build's limit
_COLUMNS = "recipient, type, source, description, created, updated"


class SuppressionError(ValueError):
    """An entry the list refuses (no address, unknown type or source); nothing was changed."""


@dataclass(frozen=True)
class Suppression:
    recipient: str
    type: str
    source: str
    description: str
    created: float
    updated: float

    @property
    def cursor(self) -> str:
        """The ``after`` value that continues a listing after this entry."""
        return f"{self.recipient} {self.type}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_recipient(text: str) -> str:
    """``text`` as the list keys it (trimmed, lower-cased), or SuppressionError."""
    address = text.strip() if isinstance(text, str) else ""
    # Printable ASCII holds no control character, and no white space but the space: the
    # common address is checked in C, the rest character by character.
    plain = address.isascii() and address.isprintable() and " " not in address
    if not plain and any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in address):
        raise SuppressionError(f"recipient {text!r} has white space or control characters")
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        raise SuppressionError(f"recipient {text!r} is not an address (local@domain)")
    return address.lower()


def check_type(value: str) -> str:
    if value not in TYPES:
        raise SuppressionError(f"type {value!r} is not one of {', '.join(TYPES)}")
    return value


def check_source(value: str) -> str:
    if value not in SOURCES:
        raise SuppressionError(f"source {value!r} is not one of {', '.join(SOURCES)}")
    return value


def entry_row(
    recipient: str, type: str, source: str, description: str, now: float
) -> tuple[str, str, str, str, float, float]:
    """The checked ``suppressions`` row for one entry (SuppressionError if it is bad)."""
    if not isinstance(description, str) or len(description) > DESCRIPTION_LIMIT:
        raise SuppressionError(f"description longer than {DESCRIPTION_LIMIT} characters")
    return (
        normalize_recipient(recipient),
        check_type(type),
        check_source(source),
        description,
        now,
        now,
    )


_UPSERT = (
    f"INSERT INTO suppressions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (recipient, type) DO UPDATE SET source = excluded.source,"
    " description = excluded.description, updated = excluded.updated"
)


def _in_transaction(store: EventStore, cur: Any, work: Callable[[Any], T], *, write: bool) -> T:
    return work(cur) if cur is not None else store.transaction(work, write=write)


def suppress(
    store: EventStore,
    recipient: str,
    *,
    type: str = NON_TRANSACTIONAL,
    source: str = "manual",
    description: str = "",
    cur: Any = None,
) -> None:
    """Add or update the (recipient, type) entry; ``created`` of an existing entry is kept."""
    row = entry_row(recipient, type, source, description, time.time())
    _in_transaction(store, cur, lambda c: c.execute(store.sql(_UPSERT), row), write=True)


def suppress_rows(store: EventStore, rows: Sequence[tuple[Any, ...]], *, cur: Any = None) -> int:
    """Upsert many checked rows (:func:`entry_row`) in one transaction; returns how many."""

    def work(c: Any) -> int:
        c.executemany(store.sql(_UPSERT), rows)
        return len(rows)

    return _in_transaction(store, cur, work, write=True)


def unsuppress(
    store: EventStore, recipient: str, type: str | None = None, *, cur: Any = None
) -> int:
    """Remove the recipient's entry of ``type`` (both when None); returns how many went."""
    address = normalize_recipient(recipient)
    where, args = "recipient = ?", [address]
    if type is not None:
        where, args = where + " AND type = ?", [address, check_type(type)]

    def work(c: Any) -> int:
        c.execute(store.sql(f"DELETE FROM suppressions WHERE {where}"), args)
        return c.rowcount

    return _in_transaction(store, cur, work, write=True)


def lookup(
    store: EventStore, recipients: Iterable[str], *, transactional: bool, cur: Any = None
) -> set[str]:
    """Which of ``recipients`` (as given) are suppressed for this kind of mail."""
    by_key: dict[str, list[str]] = {}
    for recipient in recipients:
        key = recipient.strip().lower() if isinstance(recipient, str) else ""
        if key:
            by_key.setdefault(key, []).append(recipient)
    if not by_key:
        return set()
    kind = TRANSACTIONAL if transactional else NON_TRANSACTIONAL
    keys = sorted(by_key)

    def work(c: Any) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _PER_QUERY):
            chunk = keys[start : start + _PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            c.execute(
                store.sql(
                    f"SELECT recipient FROM suppressions WHERE type = ? AND recipient IN ({marks})"
                ),
                [kind, *chunk],
            )
            found.update(row[0] for row in c.fetchall())
        return {given for key in found for given in by_key[key]}

    return _in_transaction(store, cur, work, write=False)


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_entries(
    store: EventStore,
    *,
    source: str | None = None,
    search: str | None = None,
    type: str | None = None,
    recipient: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
    after: str | None = None,
    cur: Any = None,
) -> list[Suppression]:
    """Entries in (recipient, type) order, filtered; ``search`` matches a part of the
    recipient or the description (case-insensitive); ``after`` is a previous page's last
    entry's :attr:`Suppression.cursor`; ``limit`` None lists all."""
    where: list[str] = []
    args: list[Any] = []
    if source:
        where.append("source = ?")
        args.append(check_source(source))
    if type:
        where.append("type = ?")
        args.append(check_type(type))
    if recipient is not None:
        where.append("recipient = ?")
        args.append(normalize_recipient(recipient))
    if search:
        where.append("(recipient LIKE ? ESCAPE '\\' OR lower(description) LIKE ? ESCAPE '\\')")
        args += [_like(search), _like(search)]
    if after:
        after_recipient, _, after_type = after.rpartition(" ")
        where.append("(recipient > ? OR (recipient = ? AND type > ?))")
        args += [after_recipient, after_recipient, after_type]
    text = f"SELECT {_COLUMNS} FROM suppressions"
    if where:
        text += " WHERE " + " AND ".join(where)
    text += " ORDER BY recipient, type"
    if limit is not None:
        text += " LIMIT ?"
        args.append(int(limit))

    def work(c: Any) -> list[Suppression]:
        c.execute(store.sql(text), args)
        return [Suppression(*row) for row in c.fetchall()]

    return _in_transaction(store, cur, work, write=False)
