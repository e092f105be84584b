"""The event store: where injection, open and click events are kept (SPEC 7).

Durability is the contract. ``record`` returns only once the events are committed and the
database has flushed them, so an event the milter or the tracker acknowledged survives a
SIGKILL. When the store cannot promise that, it raises :class:`StoreUnavailable` and the
caller answers 4xx: the sender or the mail client retries, nothing is accepted and forgotten.

Two backends with one schema (:mod:`.schema`): SQLite (:mod:`.sqlite_store`, one file in the
state directory, the single-machine default) and PostgreSQL (:mod:`.postgres_store`, shared
by milter and tracker nodes); this module holds what they share and ``open_store``. Concurrent
``record`` calls from many threads (libmilter runs one per SMTP connection) are group
committed: one thread writes everything queued so far in one transaction while the others wait
for that commit, so one flush serves many events. Measured on SQLite with 8 threads of
1-event records, that beats one connection behind a lock (every record pays its own flush) and
thread-local connections (SQLite's busy handler sleeps, so writers stall for up to ~0.7 s).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import structlog

from ..redaction import redact  # one helper for every secret; others import it from here
from ..settings import SYSTEM_TAG_LIMIT
from . import erasure, floods, payload, schema, stats
from .columns import bounce_class_column, derived_columns
from .columns import text_column as _text
from .schema import SchemaError

log = structlog.get_logger("smtpapi_milter.events.store")

__all__ = [
    "EventStore",
    "SchemaError",
    "StoreError",
    "StoreTagRegistry",
    "StoreUnavailable",
    "open_store",
]

T = TypeVar("T")
Cursor = Any  # sqlite3.Cursor or psycopg.Cursor: the store uses what both offer

EVENT_COLUMNS = (
    "event_id",
    "type",
    "timestamp",
    "transmission_id",
    "message_id",
    "campaign_id",
    "rcpt_to",
    "payload",
    "machine",
    "target_link_url",
    "target_link_name",
    "tags",
    "mta_queue_id",
    "bounce_class",
)
ON_CONFLICT = " ON CONFLICT (event_id) DO NOTHING"
RCPT_COLUMN = EVENT_COLUMNS.index("rcpt_to")
_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(EVENT_COLUMNS))})" + ON_CONFLICT
)
# The JSON text stored as an event's ``payload`` (events/payload.py): the tracker's journal
# writes the same text, so an event is encoded once (events/journal.py).
encode_payload = payload.encode


def _committed() -> None:
    """The waiter of a commit that is done already (:meth:`EventStore.commit_behind`)."""


class StoreError(Exception):
    """Base of the event store's own errors."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written now; callers answer 4xx, never drop events."""


def event_row(event: dict[str, Any], text: str | None = None) -> tuple[Any, ...]:
    """The ``events`` row for one flat event; ValueError if it lacks what the store needs.
    ``text``: the event's :func:`encode_payload`, when the caller made it already."""
    get = event.get
    event_id, kind = get("event_id"), get("type")
    if not isinstance(event_id, str) or not event_id or not isinstance(kind, str) or not kind:
        raise ValueError(f"event needs a non-empty event_id and type: {event!r:.200}")
    try:
        stamp = float(event["timestamp"])
    except (KeyError, TypeError, ValueError):
        stamp = math.nan
    if not math.isfinite(stamp):
        raise ValueError(f"event {event_id} has no unix-seconds timestamp")
    return (
        event_id,
        kind,
        stamp,
        _text(get("transmission_id")),
        _text(get("message_id")),
        _text(get("campaign_id")),
        _text(get("rcpt_to")).lower(),
        payload.encode(event) if text is None else text,
        *derived_columns(event),
        _text(get("mta_queue_id")),
        bounce_class_column(event),
    )


class _Batch:
    __slots__ = ("done", "error", "floods", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.floods: list[floods.FloodCount] = []
        self.done = False
        self.error: BaseException | None = None


class _GroupCommit:
    """Rows from concurrent callers share one transaction and one flush.

    A caller queues its rows, then takes the commit lock. If a previous holder already
    committed its batch it returns; otherwise it commits everything queued so far (its own
    rows included) on behalf of everyone waiting.
    """

    def __init__(self, commit: Callable[[list[tuple[Any, ...]], list[floods.FloodCount]], None]):
        self._commit = commit
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._batch = _Batch()

    def submit(
        self, rows: list[tuple[Any, ...]], flood_counts: Sequence[floods.FloodCount] = ()
    ) -> None:
        with self._queue_lock:
            batch = self._batch
            batch.rows.extend(rows)
            batch.floods.extend(flood_counts)
        with self._commit_lock:
            if not batch.done:
                self._flush()
        if batch.error is not None:
            raise StoreUnavailable(f"events not stored: {batch.error}") from batch.error

    def _flush(self) -> None:
        with self._queue_lock:
            batch, self._batch = self._batch, _Batch()
        try:
            self._commit(batch.rows, batch.floods)
        except BaseException as exc:
            # Every waiter on this batch must fail too, whatever went wrong.
            batch.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            batch.done = True


class EventStore(stats.CampaignReports):
    """What the milter and the tracker need from an event store; see :func:`open_store`.

    Campaign reports come from :class:`.stats.CampaignReports`. Subclasses supply
    ``_transaction`` (run a function with a cursor in one transaction,
    mapping connection and I/O failures to StoreUnavailable) and ``_lock`` (serialize
    with other processes; SQLite's write transactions already are).
    """

    dialect: str
    placeholder = "?"

    def __init__(self, url: str):
        self.url = url
        self._group = _GroupCommit(self._insert)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact(self.url)}>"

    def _transaction(self, work: Callable[[Cursor], T], *, write: bool) -> T:
        raise NotImplementedError

    def transaction(self, work: Callable[[Cursor], T], *, write: bool) -> T:
        """Run ``work(cursor)`` in one transaction, for modules that keep tables of their own
        in the store (webhook cursors). Write SQL with ``?`` and pass it through :meth:`sql`.
        Raises StoreUnavailable as every other store call does."""
        return self._transaction(work, write=write)

    def commit_behind(self, work: Callable[[Cursor], None]) -> Callable[[], None]:
        """Run ``work(cursor)`` in a write transaction whose COMMIT may go on while the
        caller does other work (SQLite: on a thread of its own; elsewhere it is done before
        this returns). Returns a function that waits for that commit: it returns once the
        transaction is durably committed, as :meth:`transaction` does, or raises
        StoreUnavailable (nothing of it is stored). Call it before using the store again."""
        self._transaction(work, write=True)
        return _committed

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in this driver's style."""
        return self._sql(text)

    def _lock(self, cur: Cursor, name: str, *, shared: bool = False) -> None:
        """Hold lock ``name`` until the transaction ends (no-op where writers serialize)."""

    def _cursor_horizon(self, cur: Cursor) -> int | None:
        """The highest id below which no write is still in flight (None: all are)."""
        return None

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def record(
        self,
        events: Sequence[dict[str, Any]],
        flood_counts: Sequence[floods.FloodCount] = (),
    ) -> None:
        """Durably store events (committed and flushed) before returning.

        Idempotent on ``event_id``: a repeat of a stored event_id is ignored, the first copy
        stays. Raises StoreUnavailable on any connection or I/O failure, ValueError (before
        anything is written) on an event without event_id, type or timestamp.
        ``flood_counts`` (the tracker's folded requests, :mod:`.floods`) are added to their
        counters in the same transaction.
        """
        rows = [event_row(event) for event in events]
        if rows or flood_counts:
            self._group.submit(rows, flood_counts)

    def _insert(
        self, rows: list[tuple[Any, ...]], flood_counts: Sequence[floods.FloodCount] = ()
    ) -> None:
        def work(cur: Cursor) -> None:
            self._lock(cur, "cursor", shared=True)
            kept = erasure.without_erased(cur, self._sql, rows, RCPT_COLUMN)
            if kept:
                self._insert_rows(cur, list(kept))
            floods.add_counts(cur, self._sql, flood_counts)

        self._transaction(work, write=True)

    def insert_events(
        self,
        cur: Cursor,
        events: Sequence[dict[str, Any]],
        payloads: Sequence[str | None] | None = None,
        *,
        rows: Sequence[tuple[Any, ...]] | None = None,
    ) -> None:
        """Insert events inside a write :meth:`transaction`, so they commit (durably, with
        the rest of it) or vanish together with that transaction's other rows: the log
        follower stores its position in the log this way. Idempotent on ``event_id``.
        ``payloads``, if given, are the events' :func:`encode_payload` (None: not made);
        ``rows``, if given, their :func:`event_row`, made by the caller in its own way
        (the log follower's: maillog/outcome_events.outcome_row); ``events`` is then unread."""
        if rows is not None:
            rows = list(rows)
        elif payloads is None:
            rows = [event_row(event) for event in events]
        else:
            pairs = zip(events, payloads, strict=True)
            rows = [event_row(event, payload) for event, payload in pairs]
        if rows:
            self._lock(cur, "cursor", shared=True)
            kept = erasure.without_erased(cur, self._sql, rows, RCPT_COLUMN)
            if kept:
                self._insert_rows(cur, list(kept))

    def _insert_rows(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self._sql(_INSERT), rows)

    def query(self, **filters: Any) -> list[dict[str, Any]]:
        """Events as recorded, in insertion order; filters as for :meth:`query_with_ids`."""
        return [event for _, event in self.query_with_ids(**filters)]

    def query_with_ids(
        self,
        *,
        types: Sequence[str] | None = None,
        campaign: str | None = None,
        rcpt: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        after_id: int | None = None,
        newest: bool = False,
    ) -> list[tuple[int, dict[str, Any]]]:
        """(id, event) pairs in insertion (id) order, for pagination with ``after_id``.

        ``rcpt`` matches case-insensitively; ``since`` is inclusive, ``until`` exclusive
        (unix seconds). With ``after_id`` the result stops below any id whose write is still
        in flight, so a cursor advanced to the last id seen never skips a later commit.
        ``newest`` takes the last ``limit`` matches instead of the first (still oldest first).
        """
        if (types is not None and not types) or limit == 0:
            return []
        clauses, params = _filters(types, campaign, rcpt, since, until, after_id)

        def work(cur: Cursor) -> list[tuple[int, dict[str, Any]]]:
            where, args = list(clauses), list(params)
            horizon = self._cursor_horizon(cur) if after_id is not None else None
            if horizon is not None:
                where.append("id <= ?")
                args.append(horizon)
            sql = "SELECT id, payload FROM events"
            sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
            sql += " DESC" if newest else ""
            if limit is not None:
                sql += " LIMIT ?"
                args.append(int(limit))
            cur.execute(self._sql(sql), args)
            rows = cur.fetchall()
            return [(row[0], payload.decode(row[1])) for row in (rows[::-1] if newest else rows)]

        return self._transaction(work, write=False)

    def admit_tags(self, tags: Sequence[str], limit: int = SYSTEM_TAG_LIMIT) -> list[str]:
        """The system-wide tag registry (SPEC 3): which of ``tags`` may be used.

        Known tags pass; a new tag is added while fewer than ``limit`` distinct tags exist;
        the rest are left out of the result (input order and repeats kept otherwise). Safe
        against concurrent admission from several processes.
        """
        wanted = list(dict.fromkeys(tags))
        if not wanted:
            return []

        def work(cur: Cursor) -> set[str]:
            known = self._known_tags(cur, wanted)
            new = [tag for tag in wanted if tag not in known]
            if not new:
                return known
            self._lock(cur, "tags")
            known = self._known_tags(cur, wanted)  # another process may have added some
            cur.execute("SELECT count(*) FROM tags")
            room = max(0, limit - cur.fetchone()[0])
            added = [tag for tag in wanted if tag not in known][:room]
            now = time.time()
            insert = "INSERT INTO tags (tag, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING"
            cur.executemany(self._sql(insert), [(tag, now) for tag in added])
            return known | set(added)

        admitted = self._transaction(work, write=True)
        return [tag for tag in tags if tag in admitted]

    def _known_tags(self, cur: Cursor, tags: list[str]) -> set[str]:
        marks = ", ".join("?" * len(tags))
        cur.execute(self._sql(f"SELECT tag FROM tags WHERE tag IN ({marks})"), tags)
        return {row[0] for row in cur.fetchall()}

    def tags(self) -> list[str]:
        """Every registered tag, oldest first."""

        def work(cur: Cursor) -> list[str]:
            cur.execute("SELECT tag FROM tags ORDER BY first_seen, tag")
            return [row[0] for row in cur.fetchall()]

        return self._transaction(work, write=False)

    def erase_recipient(self, rcpt: str, *, include_suppression: bool = False) -> int:
        """Delete every event of one recipient and keep later ones out (privacy requests,
        :mod:`.erasure`); returns how many were deleted. NotAnAddress (a ValueError) for an
        empty, blank or malformed address, before anything is touched. The recipient's
        suppression list entries stay (they are what keeps mail from them) unless
        ``include_suppression``: then they go in the same transaction."""
        address = erasure.erasable_address(rcpt)

        def work(cur: Cursor) -> int:
            self._lock(cur, "cursor")  # inserts in flight finish first; later ones see it
            if include_suppression:
                from ..suppression.store import unsuppress

                unsuppress(self, address, cur=cur)
            return erasure.erase(cur, self._sql, address)

        return self._transaction(work, write=True)

    def delete_older_than(self, cutoff: float) -> int:
        """Delete events with a timestamp before ``cutoff`` (retention); returns how many.
        Flood counters of tokens not folded since then go too."""
        self._transaction(lambda cur: floods.prune(cur, self._sql, cutoff), write=True)
        return self._delete("timestamp < ?", float(cutoff))

    def _delete(self, condition: str, value: Any) -> int:
        def work(cur: Cursor) -> int:
            cur.execute(self._sql(f"DELETE FROM events WHERE {condition}"), [value])
            return cur.rowcount

        return self._transaction(work, write=True)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store can take writes now."""
        self._transaction(self._check_writable, write=True)

    def _check_writable(self, cur: Cursor) -> None:
        cur.execute("SELECT count(*) FROM schema_version")
        cur.fetchone()

    def prefer_large_writes(self, cache_kib: int, *, checkpoints_apart: bool = True) -> None:
        """A writer of large transactions (the log follower's batches, the journal indexer's
        passes) will use this store: it may keep up to ``cache_kib`` of pages in memory, and
        checkpoints the WAL on a thread of its own instead of in its commits
        (``checkpoints_apart``), or in its commits once the WAL holds ``cache_kib`` (SQLite;
        a no-op elsewhere)."""

    def close(self) -> None:
        """Release connections; the store raises StoreUnavailable afterwards."""

    def migrate(self) -> int:
        """Bring the schema up to date; returns the version. SchemaError if it is newer."""

        def work(cur: Cursor) -> int:
            self._lock(cur, "migrate")
            return schema.migrate(cur, self.dialect, self._sql, redact(self.url))

        return self._transaction(work, write=True)


def _filters(
    types: Sequence[str] | None,
    campaign: str | None,
    rcpt: str | None,
    since: float | None,
    until: float | None,
    after_id: int | None,
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if types is not None:
        clauses.append(f"type IN ({', '.join('?' * len(types))})")
        params.extend(types)
    for clause, value in (
        ("campaign_id = ?", None if campaign is None else _text(campaign)),
        ("rcpt_to = ?", None if rcpt is None else _text(rcpt).lower()),
        ("timestamp >= ?", None if since is None else float(since)),
        ("timestamp < ?", None if until is None else float(until)),
        ("id > ?", None if after_id is None else int(after_id)),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return clauses, params


def open_store(url: str, *, connect_timeout: float = 5.0) -> EventStore:
    """Open (creating and migrating as needed) the store at ``url``.

    ``sqlite:///ABS/PATH`` (the directory is created 0700 if missing) or
    ``postgresql://...`` / ``postgres://...``. Raises StoreUnavailable if it cannot be
    reached within ``connect_timeout``, SchemaError if a newer release wrote it, ValueError
    for a URL of another kind.
    """
    # The backends import this module; each is loaded when a URL first asks for it (a
    # SQLite-only machine never loads psycopg).
    scheme = url.partition(":")[0].lower()
    store: EventStore
    if scheme == "sqlite":
        from .sqlite_store import SqliteStore, sqlite_path, sqlite_synchronous

        store = SqliteStore(
            url, sqlite_path(url), timeout=connect_timeout, synchronous=sqlite_synchronous(url)
        )
    elif scheme in ("postgresql", "postgres"):
        from .postgres_store import PostgresStore

        store = PostgresStore(url, connect_timeout=connect_timeout)
    else:
        raise ValueError(
            f"unsupported event store URL {redact(url)!r}: use sqlite:///PATH or postgresql://..."
        )
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


class StoreTagRegistry:
    """``settings.TagRegistry``'s interface, backed by the store: one registry system-wide.

    Tags the store admitted are cached, so the common case costs no query. Tags are never
    removed, so once the store turns a tag away the full set is final: it is loaded once
    and from then on every answer is local.
    """

    def __init__(self, store: EventStore, limit: int = SYSTEM_TAG_LIMIT):
        self._store = store
        self._limit = limit
        # Replaced, never mutated, so admit() reads it without the lock.
        self._known: frozenset[str] = frozenset()
        self._complete = False
        self._lock = threading.Lock()

    def admit(self, tags: Iterable[str]) -> list[str]:
        """The tags that may be used; new tags past the limit are dropped and logged.

        Unlike the in-process registry this can raise StoreUnavailable (answer 4xx).
        """
        tags = list(tags)
        with self._lock:
            unknown = [] if self._complete else [tag for tag in tags if tag not in self._known]
        if unknown:
            admitted = self._store.admit_tags(unknown, self._limit)
            full = len(set(admitted)) < len(set(unknown))
            everything = self._store.tags() if full else []
            with self._lock:
                self._known = self._known.union(admitted, everything)
                self._complete = self._complete or full
        known, kept = self._known, []
        for tag in tags:
            if tag in known:
                kept.append(tag)
            else:
                log.warning("tag ignored: system-wide limit reached", tag=tag, limit=self._limit)
        return kept


class LazyStore:
    """A store that is opened on first use and again after it could not be.

    Services start (and stay up) while the store is down: each use either reaches the
    store or raises StoreUnavailable, and the caller answers 4xx/503 meanwhile. Attempts to
    open are spaced ``retry_interval`` apart, so an outage does not turn every request into
    a connect timeout.
    """

    def __init__(self, url: str, retry_interval: float = 1.0, clock=time.monotonic):
        self.url = url
        self.retry_interval = retry_interval
        self._clock = clock
        self._store: EventStore | None = None
        self._failed_at: float | None = None
        self._error = ""
        self._lock = threading.Lock()

    def get(self) -> EventStore:
        """The open store; StoreUnavailable while it cannot be opened."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is not None:
                return self._store
            now = self._clock()
            if self._failed_at is not None and now - self._failed_at < self.retry_interval:
                raise StoreUnavailable(self._error)
            try:
                self._store = open_store(self.url)
            except StoreUnavailable as exc:
                self._failed_at, self._error = now, str(exc)
                raise
            self._failed_at = None
            return self._store

    def __getattr__(self, name: str) -> Any:
        # Everything else an EventStore offers (record, query, admit_tags, ...), on the
        # store once it is open: StoreUnavailable until then.
        return getattr(self.get(), name)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
