"""The tracker's event journal: durable on append, indexed into the store off the hot path.

Storing a click in the store before its redirect made every answer wait for an SQLite insert
touching seven B-trees (or a PostgreSQL round trip) and its flush; that insert was the
tracker's ceiling. Now an answered click is first *appended* to a journal file of its worker
process and flushed (``O_DSYNC`` write, one per group of requests, before any of them is
answered); a background indexer then inserts the same events into the store, together with
the journal's position in the same transaction. So:

- every answered click is on disk before its answer (the journal);
- after a crash (SIGKILL, power loss) the store holds a prefix of each journal, and its
  stored position says exactly where the rest starts: replaying from there neither loses
  nor repeats an event (and ``event_id`` is unique in the store besides);
- the store and its readers (admin API, dashboard, webhooks) lag the answers by the
  indexing delay: milliseconds when idle, longer under load or while the store is down.

One journal file per worker process (no lock shared between processes on the hot path),
named by creation time and pid, held under an exclusive ``flock`` while its worker lives.
A file nobody holds belongs to a worker that died: any worker replays it into the store
(from the stored position) and deletes it. A live worker starts a new file past
``ROTATE_BYTES`` and deletes the old one once all of it is indexed, so a journal holds at
most about that much of events already in the store (an erased recipient's clicks may stay
there that long; the indexer applies erasure like every other insert, so they are never
stored).

A record is one group of events: ``crc32(body) body\\n`` with ``body`` the JSON list of
events. Only a file's tail can be torn (appends by one thread, each flushed before the next);
a record whose line is incomplete or whose checksum is wrong was never acknowledged, and
replay stops there.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from ..thread_names import name_this_thread
from . import floods
from .store import EventStore, LazyStore, encode_payload

log = structlog.get_logger("smtpapi_milter.journal")

SUFFIX = ".journal"
ROTATE_BYTES = 1 << 20
RETRY_SECONDS = 1.0  # between attempts while the store is down; also the health ping period
REPLAY_EVENTS = 5000  # per replay transaction
# After a commit, the indexer lets events gather this long (unless a full group is waiting)
# before the next: under load, fewer and larger transactions cost less CPU per event (pages
# of the table and its indexes written once per commit, not once per event); idle, the first
# click after a pause is indexed at once. It is how far reads of the store may lag under load.
INDEX_INTERVAL = 0.05
# The store remembers how far each journal is indexed: table journal_positions, schema
# migration 10 (events/schema.py), in place once the store is open.
_UPSERT = (
    "INSERT INTO journal_positions (journal, position) VALUES (?, ?)"
    " ON CONFLICT (journal) DO UPDATE SET position = excluded.position"
)

Events = list[dict[str, Any]]
# (journal, end offset, events, folded counts, journal retired before them, payloads or None)
_Item = tuple[str, int, Events, list[floods.FloodCount], str | None, list[str] | None]


def encode_payloads(events: Events) -> list[str]:
    """Each event's JSON as the store keeps it: made once, journaled, then stored."""
    return [encode_payload(event) for event in events]


def encode_record(events: Events, payloads: list[str] | None = None) -> bytes:
    if payloads is None:
        payloads = encode_payloads(events)
    # UTF-8: encode_payload (orjson) keeps non-ASCII text as it is; no lone surrogates reach
    # it (those go through the stdlib's ASCII escapes).
    body = ("[" + ",".join(payloads) + "]").encode("utf-8")
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def read_records(path: Path, start: int) -> Iterator[tuple[int, Events]]:
    """(end offset, events) of each whole, intact record of ``path`` from offset ``start``."""
    with path.open("rb") as journal:
        journal.seek(start)
        offset = start
        for line in journal:
            if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
                return
            body = line[9:-1]
            try:
                if int(line[:8], 16) != zlib.crc32(body):
                    return
                events = json.loads(body.decode("utf-8", "surrogatepass"))
            except ValueError:
                return
            offset += len(line)
            yield offset, events


class Journal:
    """The appending side: one thread of one worker process writes through it."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._held: dict[str, int] = {}  # journal name -> its open, locked descriptor
        self.name = ""
        self._fd = -1
        self._size = 0
        self._open_new()

    def _open_new(self) -> None:
        name = f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
        # O_DSYNC: each write returns once its data is on disk, as write + fdatasync did, in
        # one system call; the writer thread lets go of the GIL and takes it back once per
        # group instead of twice (taking it back from a busy event loop can wait up to the
        # interpreter's 5 ms switch interval).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_DSYNC
        fd = os.open(self.directory / name, flags, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else can hold it
        _sync_directory(self.directory)  # the file itself survives a power cut
        self._held[name] = fd
        self.name, self._fd, self._size = name, fd, 0

    def append(
        self, groups: list[Events], payloads: list[list[str]] | None = None
    ) -> tuple[str, int, str | None]:
        """Write each group as a record and flush them all; return (journal, end offset, a
        journal just left behind or None). OSError if the disk refused: nothing acknowledged.
        ``payloads``: each group's :func:`encode_payloads`, if made already."""
        retired = None
        if self._size >= ROTATE_BYTES:
            retired = self.name
            self._open_new()
        texts = payloads if payloads is not None else [None] * len(groups)
        data = b"".join(
            encode_record(events, made) for events, made in zip(groups, texts, strict=True)
        )
        if not data:
            return self.name, self._size, retired
        view = memoryview(data)
        try:
            while view:  # flushed by O_DSYNC (see _open_new)
                view = view[os.write(self._fd, view) :]
        except OSError:
            # Whatever part reached the file is a torn tail nobody was told about: cut it so
            # the next records are not hidden behind it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        return self.name, self._size, retired

    def release(self, name: str) -> None:
        """Delete journal ``name`` (all of it is indexed) and let go of it."""
        fd = self._held.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()


class Indexer:
    """The thread moving journal records into the store, and replaying dead workers' ones.

    ``healthy`` says whether the store took the last write or ping; the tracker answers 503
    while it does not (an outage would otherwise grow the journal without bound).
    """

    def __init__(self, store: EventStore | LazyStore, journal: Journal, max_group: int = 5000):
        self.store = store
        self.journal = journal
        self.directory = journal.directory
        self.max_group = max_group
        self.healthy = False
        self.indexed = 0  # events stored, for tests and /metrics
        self._queue: deque[tuple[str, int, Events, list[floods.FloodCount], str | None]] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._queued = 0  # events in the queue
        self._retiring: list[str] = []  # journals indexed to their end, to delete
        self._rest_until = 0.0  # no next commit before this (monotonic), unless a group is full
        self._busy = False  # a batch is out of the queue, not yet in the store
        self._next_recovery = 0.0
        self._thread = threading.Thread(target=self._run, name="journal-indexer", daemon=True)

    def start(self) -> Indexer:
        self._attempt(self._first_contact)
        self._thread.start()
        return self

    def _first_contact(self) -> None:
        """Before serving: the store answers (with no journal to replay, nothing else would
        ask it, and ``healthy`` must not say yes unasked), then dead workers' clicks first."""
        self.store.ping()
        self.recover()

    def submit(
        self,
        name: str,
        end: int,
        events: Events,
        folds: list[floods.FloodCount],
        retired: str | None,
        payloads: list[str] | None = None,
    ) -> None:
        """Index ``events`` (journaled in ``name`` up to ``end``) with ``folds``; then, if
        ``retired`` names a journal left behind before them, delete it. ``payloads``: the
        events' :func:`encode_payloads`, if made already."""
        with self._wakeup:
            self._queue.append((name, end, events, folds, retired, payloads))
            self._queued += len(events)
            # Woken for the first item of a queue (it may be waiting for work) or a full
            # group; otherwise it is resting between commits (INDEX_INTERVAL) or busy, and
            # looks at the queue by itself. Woken for every group the writer hands over
            # (hundreds a second), it took the GIL each time just to go back to sleep.
            if len(self._queue) == 1 or self._queued >= self.max_group:
                self._wakeup.notify()

    def wait_indexed(self, timeout: float = 10.0) -> bool:
        """Whether everything submitted so far got into the store within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._wakeup:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wakeup.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread

    def _run(self) -> None:
        name_this_thread(self._thread.name)
        while True:
            with self._wakeup:
                while not self._queue and not self._stopping:
                    if not self._wakeup.wait(RETRY_SECONDS):
                        break  # idle for a while: ping, look for dead workers' journals
                if self._stopping and (not self._queue or not self.healthy):
                    return
                while not self._stopping and self._queued < self.max_group:
                    rest = self._rest_until - time.monotonic()
                    if rest <= 0:
                        break
                    self._wakeup.wait(rest)
                batch = self._take()
                self._busy = bool(batch)
            if batch:
                if not self._attempt(functools.partial(self._index, batch)):
                    with self._wakeup:  # keep them, in order, for the next attempt
                        self._queue.extendleft(reversed(batch))
                        self._queued += sum(len(item[2]) for item in batch)
                        self._busy = False
                        stopping = self._stopping
                    if not stopping:
                        time.sleep(RETRY_SECONDS)
                    continue
                with self._wakeup:
                    self._busy = False
                    self._rest_until = time.monotonic() + INDEX_INTERVAL
                    self._wakeup.notify_all()
            if self._retiring:
                self._retire()
            if time.monotonic() >= self._next_recovery:  # under load too
                self._attempt(self.recover)
            elif not batch:
                self._attempt(self.store.ping)

    def _take(self) -> list[_Item]:
        batch, count = [], 0
        while self._queue and count < self.max_group:
            item = self._queue.popleft()
            batch.append(item)
            count += len(item[2])
            self._queued -= len(item[2])
            if item[4] is not None:  # a retired journal: index up to here, then delete it
                break
        return batch

    def _attempt(self, work: Callable[[], object]) -> bool:
        try:
            work()
        except Exception as exc:
            if self.healthy:
                log.warning("journal not indexed, retrying", error=str(exc))
            self.healthy = False
            return False
        self.healthy = True
        return True

    def _index(self, batch: list[_Item]) -> None:
        ends: dict[str, int] = {}
        events: Events = []
        payloads: list[str | None] = []
        folds: list[floods.FloodCount] = []
        for name, end, group, group_folds, _, made in batch:
            ends[name] = end
            events.extend(group)
            payloads.extend(made if made is not None else [None] * len(group))
            folds.extend(group_folds)

        def work(cur: Any) -> None:
            self.store.insert_events(cur, events, payloads)
            floods.add_counts(cur, self.store.sql, folds)
            cur.executemany(self.store.sql(_UPSERT), list(ends.items()))

        self.store.transaction(work, write=True)
        self.indexed += len(events)
        # Committed: from here on a failure must not put the batch back (the folded counts
        # would be added twice). A journal left behind is deleted now or at the next attempt.
        self._retiring.extend(item[4] for item in batch if item[4] is not None)
        self._retire()

    def _retire(self) -> None:
        while self._retiring:
            try:
                self._forget(self._retiring[0], self.journal.release)
            except Exception as exc:
                log.warning("indexed journal not deleted yet", error=str(exc))
                return
            self._retiring.pop(0)

    # -- recovery

    def recover(self) -> None:
        """Replay and delete every journal in the directory no live worker holds."""
        self._next_recovery = time.monotonic() + 10 * RETRY_SECONDS
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            if path.name in self.journal._held:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # another worker finished it
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its worker is alive (or another one is replaying it)
                if not path.exists():
                    continue  # replayed and deleted while we waited for the lock
                self._replay(path)

                def unlink(name: str) -> None:
                    (self.directory / name).unlink(missing_ok=True)

                self._forget(path.name, unlink)
            finally:
                os.close(fd)

    def _replay(self, path: Path) -> None:
        def position(cur: Any) -> int:
            query = "SELECT position FROM journal_positions WHERE journal = ?"
            cur.execute(self.store.sql(query), [path.name])
            row = cur.fetchone()
            return int(row[0]) if row else 0

        start = self.store.transaction(position, write=False)
        replayed = 0
        pending: Events = []
        end = start
        for end, events in read_records(path, start):
            pending.extend(events)
            if len(pending) >= REPLAY_EVENTS:
                self._index([(path.name, end, pending, [], None, None)])
                replayed += len(pending)
                pending = []
        if pending or end == start:
            self._index([(path.name, end, pending, [], None, None)])
            replayed += len(pending)
        if replayed:
            log.info("journal of a stopped worker indexed", journal=path.name, events=replayed)

    def _forget(self, name: str, delete: Callable[[str], None]) -> None:
        """Delete journal ``name``, then its position (a position without its file is
        harmless; a file without its position would be replayed from the start)."""
        delete(name)
        self.store.transaction(
            lambda cur: cur.execute(
                self.store.sql("DELETE FROM journal_positions WHERE journal = ?"), [name]
            ),
            write=True,
        )


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backlog(directory: Path, store: EventStore | LazyStore) -> int:
    """Bytes of the journals in ``directory`` not yet in ``store`` (0: every answered event
    is indexed). For tests and tools that read the store right after clicks."""
    files = {path.name: path.stat().st_size for path in directory.glob("*" + SUFFIX)}
    if not files:
        return 0

    def positions(cur: Any) -> dict[str, int]:
        cur.execute("SELECT journal, position FROM journal_positions")
        return {name: int(position) for name, position in cur.fetchall()}

    indexed = store.transaction(positions, write=False)
    return sum(max(0, size - indexed.get(name, 0)) for name, size in files.items())
