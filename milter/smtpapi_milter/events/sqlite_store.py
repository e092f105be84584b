"""The SQLite event store: one file in the state directory, the single-machine default.

See :mod:`.store` for the contract (durable ``record``, group commit, StoreUnavailable).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import erasure, floods, schema
from .checkpointer import BackgroundCheckpointer
from .commit_behind import commit_behind
from .store import (
    EVENT_COLUMNS,
    ON_CONFLICT,
    RCPT_COLUMN,
    Cursor,
    EventStore,
    StoreUnavailable,
    T,
)
from .writer_lock import WriterLock

# SQLite: events per INSERT statement (fewer if the library allows fewer parameters), and
# prepared statements the writer keeps, one per group size seen (sizes vary with the load).
MAX_ROWS_PER_INSERT = 500
WRITER_STATEMENT_CACHE = 512
WRITER_LOCK_SUFFIX = ".writer-lock"
WRITER_TEMP_STORE = "PRAGMA temp_store=MEMORY"  # see SqliteStore.__init__
# How much WAL a writer that checkpoints in its commits (the journal indexer) lets grow
# between checkpoints (see prefer_large_writes).
CHECKPOINT_BYTES = 1 << 20


class SqliteStore(EventStore):
    """One SQLite file in WAL mode with ``synchronous=FULL``: a commit is on disk.

    (``?synchronous=normal`` in the URL trades that for latency: a commit is in the WAL file,
    safe from a killed process, flushed at checkpoints; see :func:`sqlite_synchronous`.)

    One writer connection (group commits, tags, deletes) and one reader connection, each
    behind its own lock: WAL lets queries run while a commit is being flushed.
    """

    dialect = schema.SQLITE

    def __init__(self, url: str, path: Path, *, timeout: float = 5.0, synchronous: str = "FULL"):
        super().__init__(url)
        self.path = path
        self.synchronous = synchronous
        self._timeout = timeout
        self._closed = False
        self._checkpointer: BackgroundCheckpointer | None = None  # see prefer_large_writes
        self._locks = {True: threading.Lock(), False: threading.Lock()}
        opened: list[sqlite3.Connection] = []
        try:
            _prepare_file(path)
            lock = path.with_name(path.name + WRITER_LOCK_SUFFIX)
            self._writer_lock = WriterLock(lock, owner_like=path)
            opened.append(self._connect(timeout, statements=WRITER_STATEMENT_CACHE))
            # The writer's statement journals in memory, not in a temporary file. A multi-row
            # INSERT inside a transaction (the tracker's journal indexer, the log follower)
            # keeps the prior content of every page it changes, to undo that statement alone
            # if it fails; past 64 KiB SQLite writes that to a new file in /var/tmp, which it
            # opens, writes, closes and unlinks per statement: for the indexer's groups of ~300
            # clicks, half as many bytes again as the WAL itself (strace), for a file nobody
            # reads unless a statement fails. In memory it holds one statement's pages (at
            # most MAX_ROWS_PER_INSERT rows), freed at its end: 100,000 clicks inserted as
            # bench/click_insert.py does, 14.7-15.5 -> 12.9-13.2 us of CPU each (two runs
            # each); the live indexer's system time 10.8-11.0 -> 8.6-9.1 us per click
            # (bench/tracker_threads.py). The writer's other temporary data (sorts of
            # the few queries it runs: tags, erasure digests, flood counters) is as small;
            # reports and other reads run on the reader, which keeps the default. Not during
            # migrations (see migrate).
            opened[0].execute(WRITER_TEMP_STORE)
            # Under the writer lock: turning a new file to WAL takes SQLite's exclusive lock,
            # and a second process doing the same meanwhile gets "database is locked" at once
            # (SQLite's busy handler is not consulted there). Two milter workers opening a
            # fresh store on their first messages did exactly that, and answered 451.
            with self._writer_lock:
                opened[0].execute("PRAGMA journal_mode=WAL")
            opened.append(self._connect(timeout))
        except (OSError, sqlite3.Error) as exc:
            for conn in opened:
                conn.close()
            if hasattr(self, "_writer_lock"):
                self._writer_lock.close()
            raise StoreUnavailable(f"cannot open event store {path}: {exc}") from exc
        self._writer, self._reader = opened
        limit = self._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_statement = max(1, min(MAX_ROWS_PER_INSERT, limit // len(EVENT_COLUMNS)))

    def _connect(self, timeout: float, statements: int = 128) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun explicitly, never implicitly.
        conn = sqlite3.connect(
            self.path,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=statements,
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        # Deleted events (erase, retention) are overwritten with zeros, not left in free space.
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _transaction(self, work: Callable[[Cursor], T], *, write: bool) -> T:
        def transaction(conn: sqlite3.Connection) -> T:
            # IMMEDIATE takes the write lock up front, so read-then-write work (tags,
            # migrations) is serialized against other processes too.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(conn.cursor())
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._connected(transaction, write=write)

    def _connected(self, use: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """``use(connection)`` with the writer (under the writer lock) or the reader."""
        with self._locks[write]:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed")
            try:
                if not write:
                    return use(self._reader)
                with self._writer_lock:
                    result = use(self._writer)
                if self._checkpointer is not None:
                    self._checkpointer.wake()
                return result
            except sqlite3.Error as exc:
                raised = self._failure(exc)
                if raised is exc:
                    raise
                raise raised from exc

    def _failure(self, exc: BaseException) -> BaseException:
        """What a store call raises for ``exc``: SQLite's operational errors (the file is
        locked, unwritable, gone, the disk full) as StoreUnavailable, others as they are."""
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
            return StoreUnavailable(f"event store {self.path}: {exc}")
        return exc

    def commit_behind(self, work: Callable[[Cursor], None]) -> Callable[[], None]:
        # ``work`` runs here under both writer locks; its COMMIT on a thread, which lets go
        # of them once it is done (events/commit_behind.py). Until then this store's writer
        # is busy: other writes in this process wait for the locks, as during any commit.
        self._locks[True].acquire()
        try:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed")
            self._writer_lock.__enter__()
        except BaseException:
            self._locks[True].release()
            raise
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn.cursor())
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            self._writer_done()
            raised = self._failure(exc)
            if raised is exc:
                raise
            raise raised from exc
        return commit_behind(conn, self._writer_done, self._failure)

    def _writer_done(self) -> None:
        self._writer_lock.__exit__()
        self._locks[True].release()
        if self._checkpointer is not None:
            self._checkpointer.wake()

    def _insert(
        self, rows: list[tuple[Any, ...]], flood_counts: Sequence[floods.FloodCount] = ()
    ) -> None:
        # Python's sqlite3 lets go of the GIL for every statement it steps, and getting it
        # back costs a wait on the request-serving thread (up to the 5 ms switch interval
        # when that thread is busy): executemany's one step per row made a 100-event group
        # commit take milliseconds. Multi-row INSERTs step once per few hundred rows, and a
        # group that fits one statement needs no BEGIN/COMMIT steps (a statement is atomic).
        per = self._rows_per_statement
        if len(rows) <= per and rows and not flood_counts:
            self._connected(lambda conn: _insert_unerased(conn, rows), write=True)
            return

        def work(cur: Cursor) -> None:
            kept = _unerased(cur, rows)
            for start in range(0, len(kept), per):
                _insert_rows(cur, kept[start : start + per])
            floods.add_counts(cur, self._sql, flood_counts)

        self._transaction(work, write=True)

    def migrate(self) -> int:
        # With temporary data in memory, the sorter of a CREATE INDEX holds every key of the
        # table in RAM instead of spilling to temporary files (an index of 1.5 million short
        # keys: 112 MB more resident memory, against 2 MB): migrations build indexes over
        # all the events a store has.
        self._connected(lambda conn: conn.execute("PRAGMA temp_store=DEFAULT"), write=True)
        try:
            return super().migrate()
        finally:
            self._connected(lambda conn: conn.execute(WRITER_TEMP_STORE), write=True)

    def erase_recipient(self, rcpt: str, *, include_suppression: bool = False) -> int:
        deleted = super().erase_recipient(rcpt, include_suppression=include_suppression)
        self.checkpoint()
        return deleted

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it to nothing: deleted rows must
        not stay readable in old WAL frames. StoreUnavailable if a reader held it up."""

        def truncate(conn: sqlite3.Connection) -> None:
            # Not while this store's own background checkpoint runs: SQLite would answer
            # busy (one checkpointer at a time) and the erase would have to be repeated.
            lock = self._checkpointer.lock if self._checkpointer else contextlib.nullcontext()
            with lock:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise sqlite3.OperationalError(
                    "WAL checkpoint held up by a reader; run erase again to finish it"
                )

        self._connected(truncate, write=True)

    def _insert_rows(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> None:
        per = self._rows_per_statement
        for start in range(0, len(rows), per):
            _insert_rows(cur, rows[start : start + per])

    def prefer_large_writes(self, cache_kib: int, *, checkpoints_apart: bool = True) -> None:
        # SQLite's default page cache is 2 MiB. A transaction that dirties more pages than
        # that spills them to the WAL before its commit, and writes (and reads back) a page
        # again each time it is touched after: over bench/maillog_bench.py's 200,000 lines
        # that was 98,500 pwrite and 41,800 pread calls, 62,000 and 27,900 with 64 MiB. The
        # commit, its flush and its durability are the same either way.
        #
        # (The writer's statement journals are in memory already, temp_store=MEMORY: over
        # the same bench they were 30,800 pwrite calls into /var/tmp; see __init__.)
        #
        # Checkpoints move to a thread of their own (events/checkpointer.py), out of the
        # commits: the checkpointer is started before automatic checkpoints are turned off,
        # so a store never stays without either.
        # Without a checkpoint thread (the journal indexer's choice), the writer's commits
        # checkpoint once the WAL holds CHECKPOINT_BYTES. A checkpoint ends in one fsync of
        # all it copied, and the disk writes that burst before what is queued after it:
        # the tracker workers' journal appends (events/journal.py), whose answers wait.
        # Checkpointing once the WAL held this writer's cache (64 MiB: a page many commits
        # changed is copied once) put bursts of ~0.4 s on a disk writing 175 MB/s into
        # the tracker's answers. Three trackers side by side, 4 rounds alternating (a
        # full-load run, then a paced one at ~5,000 clicks/s, half the peak), p99 of the
        # paced runs: 43-67 ms (median 48) checkpointing each 64 MiB, 7.3-9.6 (8.4)
        # each 1 MiB; another such run 10-30 (15) and 7.7-10 (9.3). Also tried: 1 MiB only while
        # the indexer keeps up, 64 MiB while it is behind (full load, where nobody waits
        # on its writes' latency), 7.6-12.2 (9.8) and 8.3-11 (9.6): the WAL gathered
        # meanwhile is a 64 MiB burst when it catches up. What 1 MiB costs: full-load rate
        # 12.3k clicks/s against 12.8k (5 rounds alternating, medians; with the journal's
        # spare file too, 7 rounds: 13.0k against 13.3k, lower in each); CPU, 140,000 events
        # stored, 40,000 clicks indexed in commits of 250 (in process, 3 runs
        # alternating), 22.5 us an event with 64 MiB, 23.3 with 1 MiB (26.4 with 256 KiB).
        def prefer(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            if not checkpoints_apart:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BYTES // page_size}")
            elif self._checkpointer is None:
                self._checkpointer = BackgroundCheckpointer(lambda: self._connect(self._timeout))
                conn.execute("PRAGMA wal_autocheckpoint=0")

        self._connected(prefer, write=True)

    def close(self) -> None:
        with self._locks[True], self._locks[False]:
            if not self._closed:
                self._closed = True
                if self._checkpointer is not None:
                    self._checkpointer.close()
                self._writer.close()
                self._reader.close()
                self._writer_lock.close()


def _unerased(conn: sqlite3.Connection | sqlite3.Cursor, rows: list) -> list:
    cur = conn.cursor() if isinstance(conn, sqlite3.Connection) else conn
    return list(erasure.without_erased(cur, str, rows, RCPT_COLUMN))


def _insert_unerased(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert the rows that are not an erased recipient's (events/erasure.py), by one
    statement that looks each row's digest up in the erasure list itself.

    The milter's and the tracker's groups are a few events: there, the list's own query
    before the insert (erasure.without_erased) was a second statement per message, with its
    Python and its handing over of the GIL. The milter's ``record`` on bench/milter_cpu.py's
    merge load, 8 rounds alternating: 178 -> 167 us of CPU (medians), and 256 -> 239 us with
    16 MiB touched between messages. Runs under the writer lock: no erase comes between."""
    width = len(EVENT_COLUMNS) + 1
    values: list[Any] = []
    digest = erasure.recipient_digest
    for row in rows:
        values += row
        values.append(digest(row[RCPT_COLUMN]) if row[RCPT_COLUMN] else None)
    before = conn.total_changes
    conn.execute(_unerased_insert(len(rows), width), values)
    if conn.total_changes - before < len(rows):
        # Some were passed over: a repeated event_id (idempotence), or an erased recipient,
        # which erasure.without_erased logs with its count.
        erasure.without_erased(conn.cursor(), str, rows, RCPT_COLUMN)


@functools.lru_cache(maxsize=WRITER_STATEMENT_CACHE)
def _unerased_insert(count: int, width: int) -> str:
    """:func:`_multirow_insert` of the rows whose last value (a digest) is not erased."""
    row = "(" + ", ".join("?" * width) + ")"
    digest = f"column{width}"  # SQLite names a VALUES list's columns column1, column2, ...
    return (
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)})"
        f" SELECT {', '.join(f'column{n}' for n in range(1, width))}"
        f" FROM (VALUES {', '.join([row] * count)})"
        f" WHERE {digest} IS NULL OR {digest} NOT IN (SELECT digest FROM erased_recipients)"
        + ON_CONFLICT
    )


def _insert_rows(conn: sqlite3.Connection | sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    # The rows' values in one flat list, made in C (chain), not a Python step per value.
    conn.execute(_multirow_insert(len(rows)), list(itertools.chain.from_iterable(rows)))


@functools.lru_cache(maxsize=WRITER_STATEMENT_CACHE)
def _multirow_insert(count: int) -> str:
    """SQLite's INSERT of ``count`` events in one statement."""
    values = ", ".join(["(" + ", ".join("?" * len(EVENT_COLUMNS)) + ")"] * count)
    return f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES {values}" + ON_CONFLICT


def _prepare_file(path: Path) -> None:
    # Events hold addresses and metadata: the directory is private, the file owner-only
    # (SQLite gives its -wal and -shm files the same mode).
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def sqlite_path(url: str) -> Path:
    """The file named by ``sqlite:///ABS/PATH`` (``sqlite:////ABS/PATH`` too)."""
    rest = url[len("sqlite://") :].partition("?")[0]
    if not rest.startswith("/") or rest.strip("/") == "":
        raise ValueError(f"event store URL {url!r} must name an absolute file: sqlite:///PATH")
    return Path("/" + rest.lstrip("/"))


def sqlite_synchronous(url: str) -> str:
    """``?synchronous=normal`` on a SQLite URL: commits survive a killed process but are not
    flushed to disk one by one (a power cut can lose the last ones). Default ``full``."""
    query = url.partition("?")[2]
    value = dict(p.partition("=")[::2] for p in query.split("&") if p).get("synchronous", "full")
    if value.lower() not in ("full", "normal"):
        raise ValueError(f"event store URL {url!r}: synchronous must be full or normal")
    return value.upper()
