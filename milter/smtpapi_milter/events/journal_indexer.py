"""The journal indexer: every tracker worker's journal (journal.py) moved into the event store.

One indexer per tracker node, in a process of its own (``smtpapi-milter tracker`` starts it
beside its listeners, server.py). Each public worker used to index its own journal in a
thread; live, under wrk (bench/tracker_threads.py, 2 workers, d9e2c87), those threads took
18.5 us of CPU per click, their Python (rows built while holding the GIL) delayed the event
loop beside them, and the two workers' indexers took turns at SQLite's one write lock and
evicted each other's cached pages. The same load with no indexing in the workers ran at
22.3k clicks/s instead of 17.0k. One indexer reads every journal, commits larger groups,
and leaves each worker's GIL to its answers.

Each pass it reads what was appended to each journal since its stored position (whole,
intact records only), inserts the events and adds the folded counts in one transaction
with the new positions, then rests ``INDEX_INTERVAL`` (under load, larger groups cost less
per event: a page of the table and its indexes is written once per commit) or, when there
was nothing, looks again after ``POLL_SECONDS``. A journal nobody holds (its worker moved to
a new file or died) is indexed to its last intact record and deleted, then its position.

The workers learn from it whether their clicks reach the store: it keeps ``indexer.status``
in the journal directory ("up" or "down", and when it last said so, rewritten every
``STATUS_SECONDS``). A worker answers 503 while it says "down" (the store refused the last
write or ping: a long outage would otherwise grow the journals without bound) or has not
said anything for ``STALE_SECONDS`` (no indexer runs), and ``/healthz`` says the same.

Its process runs in Linux's ``SCHED_IDLE`` class (``idle=True``): it gets the CPU the
answers leave, and a worker thread that wakes up takes its core at once. Live (2 workers
under wrk, the same run, alternating, 3 runs each): 20.4-20.6k clicks/s against 17.6-18.1k
for the same process at normal priority (17.9-18.9k at nice 19), the store ~1 s behind the
answers when the load ended. So that the store cannot fall behind without bound on a node
loaded to the limit for long, past ``CATCH_UP_BYTES`` of journal not yet indexed it leaves
the idle class until it has caught up (if allowed: root, CAP_SYS_NICE, or an RLIMIT_NICE of
20, which the systemd unit sets with ``LimitNICE=+0``; otherwise it says so in the log), and
past ``REFUSE_BYTES`` it tells the workers "down": 503 until it is under that again.

The idle class orders the guest's CPU, not the host's: on a virtual machine, a vCPU busy
with idle-class work can still slow the other one. On the 2-vCPU test VM
(bench/tracker_idle_cost.py, 4 rounds of 6 s alternating, medians) the answers ran at 9.1k
clicks/s with the indexer running, 11.2k with it paused, and 8.3k with it paused and a
process spinning in the idle class in its place. So there, every microsecond the indexer
spends on a click is taken from the answers, and only less indexing work per click (or
indexing later) gives it back.

Only one indexer of a directory works at a time (``flock`` on ``indexer.lock``): another
(a tracker started twice on one state_dir, an in-process tracker in a test) waits as a
stand-by and takes over when the first ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from ..collector import collector_paused
from ..thread_names import name_this_thread
from . import floods
from .journal import SUFFIX, Events, Folds, parse_records
from .store import EventStore, LazyStore

log = structlog.get_logger("smtpapi_milter.journal")

STATUS_NAME = "indexer.status"
LOCK_NAME = "indexer.lock"
# Rest after a commit (how far reads of the store lag under load) and between looks at an
# idle directory (how long the first click after a pause waits for the store).
INDEX_INTERVAL = 0.05
POLL_SECONDS = 0.02
RETRY_SECONDS = 1.0  # store down: between attempts; idle: between pings
STATUS_SECONDS = 1.0  # the status is rewritten at least this often
STALE_SECONDS = 10.0  # a status older than this: no indexer is running
STOP_SECONDS = 20.0  # on a stop, for the workers' last clicks (systemd waits 30 s)
CHECK_SECONDS = 0.25  # a worker reads the status at most this often
MAX_EVENTS = 10_000  # per transaction
# SQLite pages the indexer's connection keeps (the process's; a thread of a worker keeps
# SQLite's default 2 MiB). A click's insert touches pages of six B-trees, the rcpt_to
# index's anywhere: past 2 MiB of store they were read back from the OS's cache pass after
# pass. 300,000 events stored before, 20,000 clicks indexed in process (CPU time, 2 x 3
# runs): 23.3-25.9 -> 20.6-22.4 us an event; the follower's background checkpoints added
# nothing to that (20.9-22.6), so the indexer checkpoints in its commits (how often:
# sqlite_store.py prefer_large_writes).
PROCESS_CACHE_KIB = 64 * 1024
FIRST_READ = 16 << 10  # read first from each journal in a pass (enough when idle)
READ_BYTES = 8 << 20  # per journal per pass (more only for a record larger than that)
# How far behind the answers the store may fall (journal bytes not indexed; a click is
# ~700 bytes): beyond the first the indexer leaves the idle class, beyond the second the
# workers answer 503.
CATCH_UP_BYTES = 64 << 20
REFUSE_BYTES = 1 << 30
ABANDONED_SECONDS = 60.0  # a ".new" journal never renamed (its worker died creating it)
# The store remembers how far each journal is indexed: table journal_positions, schema
# migration 10 (events/schema.py), in place once the store is open.
_UPSERT = (
    "INSERT INTO journal_positions (journal, position) VALUES (?, ?)"
    " ON CONFLICT (journal) DO UPDATE SET position = excluded.position"
)


class _Tail:
    """An open journal and how far it is in the store."""

    __slots__ = ("end", "fd", "held", "position")

    def __init__(self, fd: int, position: int):
        self.fd = fd
        self.position = position
        self.end = position  # where what was written ended at the last read
        self.held = False  # we hold its lock: its worker let go of it, nobody writes more

    def read(self) -> bytes:
        """What was written after the position, up to the zeros not yet written over
        (journal.py): read in pieces twice as large each time, so that no more than twice
        what was written is read (the journal's zeros are its size: reading to a bound of
        8 MiB copied all of them every pass, ~4 us an event in passes of 1,000); bounded
        by READ_BYTES, unless one record is larger."""
        pieces: list[bytes] = []
        size, offset = FIRST_READ, self.position
        while True:
            piece = os.pread(self.fd, size, offset)
            zero = piece.find(b"\0")
            if zero >= 0:
                pieces.append(piece[:zero])
                break
            pieces.append(piece)
            offset += len(piece)
            if len(piece) < size:  # the file's end: a journal of appended records
                break
            if offset - self.position >= READ_BYTES and any(b"\n" in p for p in pieces):
                break
            size = min(2 * size, READ_BYTES)
        data = b"".join(pieces) if len(pieces) > 1 else pieces[0]
        self.end = self.position + len(data)
        return data


class JournalIndexer:
    """Indexes the journals of ``directory`` into ``store`` until stopped: :meth:`run` in a
    process of its own, or :meth:`start` as a thread."""

    def __init__(
        self,
        directory: Path,
        store: EventStore | LazyStore,
        *,
        interval: float = INDEX_INTERVAL,
        max_events: int = MAX_EVENTS,
        idle: bool = False,
        cache_kib: int = 0,
        stop_seconds: float = STOP_SECONDS,
    ):
        self.directory = directory
        self.store = store
        self.interval = interval
        self.max_events = max_events
        self.stop_seconds = stop_seconds
        # SCHED_IDLE for a process of its own only: a thread of a worker would hold the GIL
        # its event loop waits for while it waits for a CPU nobody leaves it.
        self.scheduling = IdleScheduling() if idle else None
        self.cache_kib = cache_kib  # SQLite pages kept (PROCESS_CACHE_KIB); 0: the default
        self._cached: EventStore | None = None  # the store given cache_kib
        self.backlog = 0  # journal bytes beyond the positions after the last pass
        self.healthy = False
        self.indexed = 0  # events stored, for tests
        self._tails: dict[str, _Tail] = {}
        self._unforgotten: list[str] = []  # journals deleted, their positions not yet
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd = -1
        self._published = (False, 0.0)  # (up, monotonic time) last written
        self._next_ping = 0.0

    # -- running it

    def start(self) -> JournalIndexer:
        """Index in a thread of this process (a tracker without the indexer process). If no
        other indexer holds the directory, the store is asked and the journals left behind
        indexed before this returns, as the tracker's first answers expect."""
        if self._take_lock(wait=False):
            for _ in range(100):  # the journals left behind, then their deletion
                if not self._step():
                    break
        self._thread = threading.Thread(target=self.run, name="journal-indexer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def run(self) -> None:
        """Index until :meth:`stop` (or SIGTERM in the indexer process); then index what the
        workers wrote until then, and say "down"."""
        name_this_thread("journal-indexer")
        if not self._take_lock(wait=True):
            return  # stopped while another indexer held the directory
        if self.scheduling is not None:
            self.scheduling.enter()
        try:
            while not self._stopping.is_set():
                done = self._step()
                if not self.healthy:
                    pause = RETRY_SECONDS
                elif done >= self.max_events:
                    continue  # behind: no rest until caught up
                else:
                    pause = self.interval if done else POLL_SECONDS
                self._stopping.wait(pause)
            self._last_passes()
        finally:
            self._publish(False)
            for tail in self._tails.values():
                os.close(tail.fd)
            self._tails.clear()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _last_passes(self) -> None:
        """On a stop: index until every journal is let go of and deleted (the workers stop at
        the same time and write what they hold first), for at most ``stop_seconds``; what is
        left (the store down, a worker that does not stop) is indexed at the next start."""
        deadline = time.monotonic() + self.stop_seconds
        while self.healthy and time.monotonic() < deadline:
            if not self._step():
                if not self._tails:
                    return
                time.sleep(POLL_SECONDS)

    def _take_lock(self, *, wait: bool) -> bool:
        if self._lock_fd >= 0:
            return True
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait and not self._stopping.wait(RETRY_SECONDS):
                    continue
                os.close(fd)
                return False
            self._lock_fd = fd
            return True

    def _step(self) -> int:
        """One pass, its failure noted in ``healthy`` and the status; what it stored."""
        try:
            self._keep_pages()
            done = self.index_once()
            now = time.monotonic()
            if not done and (not self.healthy or now >= self._next_ping):
                self.store.ping()  # idle: does the store still take writes?
                self._next_ping = now + RETRY_SECONDS
        except Exception as exc:
            if self.healthy or not self._published[1]:
                log.warning("journal not indexed, retrying", error=str(exc))
            self.healthy = False
            self._publish(False)
            return 0
        self.healthy = True
        if self.scheduling is not None:
            self.scheduling.follow(self.backlog)
        if self.backlog > REFUSE_BYTES and self._published[0]:
            log.error("journal indexing too far behind: tracking answers 503", backlog=self.backlog)
        self._publish(self.backlog <= REFUSE_BYTES)
        return done

    def _keep_pages(self) -> None:
        """``cache_kib`` for the store (again after the store was opened again)."""
        if self.cache_kib:
            store = self.store.get() if isinstance(self.store, LazyStore) else self.store
            if store is not self._cached:
                store.prefer_large_writes(self.cache_kib, checkpoints_apart=False)
                self._cached = store

    def _publish(self, up: bool) -> None:
        """Tell the workers (rewritten on a change, and every STATUS_SECONDS meanwhile)."""
        now = time.monotonic()
        if self._published[0] == up and now - self._published[1] < STATUS_SECONDS:
            return
        path = self.directory / STATUS_NAME
        temporary = path.with_name(f".{STATUS_NAME}.{os.getpid()}")
        try:
            temporary.write_text(f"{'up' if up else 'down'} {time.monotonic_ns()}\n")
            os.replace(temporary, path)
        except OSError as exc:  # the workers then see it go stale: 503, not lost clicks
            log.warning("indexer status not written", error=str(exc))
            return
        self._published = (up, now)

    # -- one pass

    def index_once(self) -> int:
        """Store what the journals hold beyond their positions (up to ``max_events`` in one
        transaction), then delete those nobody holds and are indexed to their end. Returns
        how many events and folded counts were stored."""
        with collector_paused():  # a pass's events are thousands of dicts in no cycle
            return self._index_once()

    def _index_once(self) -> int:
        while self._unforgotten:
            self._forget(self._unforgotten[0])
            self._unforgotten.pop(0)
        names = self._journals()
        for name in set(self._tails) - set(names):  # deleted by another indexer before us
            os.close(self._tails.pop(name).fd)
        self._open(names)
        events: Events = []
        payloads: list[str] = []
        folds: Folds = []
        ends: dict[str, int] = {}
        for name in names:
            tail = self._tails.get(name)
            if tail is None:
                continue
            data = tail.read()
            if not data:
                continue
            for record in parse_records(data, tail.position):
                events.extend(record.events)
                payloads.extend(record.payloads)
                folds.extend(record.folds)
                ends[name] = record.end
                if len(events) >= self.max_events:
                    break
            if len(events) >= self.max_events:
                break
        if ends:
            # In the order they were answered across the workers' journals (each in order
            # already): the store's insertion order is what the API and webhooks page by.
            order = sorted(range(len(events)), key=[_answered(e) for e in events].__getitem__)
            events = [events[i] for i in order]
            payloads = [payloads[i] for i in order]

            def work(cur: Any) -> None:
                self.store.insert_events(cur, events, payloads)
                floods.add_counts(cur, self.store.sql, folds)
                cur.executemany(self.store.sql(_UPSERT), list(ends.items()))

            self.store.transaction(work, write=True)
            for name, end in ends.items():
                self._tails[name].position = end
            self.indexed += len(events)
        self._finish([name for name in names if name not in ends])
        self.backlog = sum(max(0, tail.end - tail.position) for tail in self._tails.values())
        return len(events) + len(folds)

    def _journals(self) -> list[str]:
        names = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SUFFIX):
                names.append(entry.name)
            elif entry.name.endswith(SUFFIX + ".new"):
                self._sweep(entry.path)
        return sorted(names)  # oldest first: a worker's events in the order it answered

    def _open(self, names: list[str]) -> None:
        new = [name for name in names if name not in self._tails]
        if not new:
            return

        def positions(cur: Any) -> dict[str, int]:
            cur.execute("SELECT journal, position FROM journal_positions")
            return {name: int(position) for name, position in cur.fetchall()}

        stored = self.store.transaction(positions, write=False)
        for name in new:
            try:
                fd = os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted meanwhile
            self._tails[name] = _Tail(fd, stored.get(name, 0))

    def _finish(self, names: list[str]) -> None:
        """Delete each of ``names`` (nothing indexed from it in this pass) that nobody holds
        and that has no intact record left (a torn tail was never acknowledged)."""
        for name in names:
            tail = self._tails.get(name)
            if tail is None:
                continue
            if not tail.held:
                try:
                    fcntl.flock(tail.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its worker writes it
                tail.held = True
            if any(parse_records(tail.read(), tail.position)):
                continue  # written before its worker let go: indexed in the next pass
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
            os.close(self._tails.pop(name).fd)
            self._unforgotten.append(name)
            self._forget(name)
            self._unforgotten.remove(name)

    def _forget(self, name: str) -> None:
        """Delete the position of a journal deleted before (in this order: a position
        without its file is harmless; a file without its position would be indexed again
        from the start)."""
        self.store.transaction(
            lambda cur: cur.execute(
                self.store.sql("DELETE FROM journal_positions WHERE journal = ?"), [name]
            ),
            write=True,
        )

    def _sweep(self, path: str) -> None:
        """Delete a journal its worker created but never named (it died in between): it
        holds nothing, since a worker writes only once its journal has its name."""
        with contextlib.suppress(OSError):
            if time.time() - os.stat(path).st_mtime > ABANDONED_SECONDS:
                os.unlink(path)


def _answered(event: dict[str, Any]) -> int:
    """When the tracker made ``event``, to the millisecond: its id (ids.py) starts with it."""
    event_id = event.get("event_id")
    ours = isinstance(event_id, str) and event_id.isascii() and event_id.isdigit()
    return int(event_id) if ours else 0


class IdleScheduling:
    """The indexer process's CPU class: SCHED_IDLE while it keeps up (see the docstring)."""

    def __init__(self) -> None:
        self.idle = False
        self._stuck = False  # behind, and not allowed out of the idle class: said once

    def enter(self) -> None:
        self.idle = self._set(os.SCHED_IDLE)
        if not self.idle:
            log.info("journal indexer runs at normal priority (no SCHED_IDLE here)")

    def follow(self, backlog: int) -> None:
        if self.idle and backlog > CATCH_UP_BYTES:
            if self._set(os.SCHED_OTHER):
                self.idle = False
                log.warning(
                    "journal indexing behind: normal priority until caught up", backlog=backlog
                )
            elif not self._stuck:
                self._stuck = True
                log.warning(
                    "journal indexing behind, and not allowed out of the idle class"
                    " (needs CAP_SYS_NICE or LimitNICE=+0)",
                    backlog=backlog,
                )
        elif not self.idle and backlog == 0 and self._set(os.SCHED_IDLE):
            self.idle = True
            self._stuck = False

    @staticmethod
    def _set(policy: int) -> bool:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except (AttributeError, OSError):
            return False
        return True


class IndexerStatus:
    """A worker's view of :data:`STATUS_NAME`: whether its journaled clicks reach the store."""

    def __init__(self, directory: Path, clock_ns: Any = time.monotonic_ns):
        self.path = directory / STATUS_NAME
        self._clock_ns = clock_ns
        self._checked = -1 << 62
        self._up = False

    def up(self) -> bool:
        """The indexer's last word, if recent: read at most every CHECK_SECONDS while it says
        up, and every time while it does not (a worker started before the indexer would
        otherwise refuse clicks for a while after the indexer said up)."""
        now = self._clock_ns()
        if not self._up or now - self._checked >= CHECK_SECONDS * 1e9:
            self._checked = now
            self._up = self._read(now)
        return self._up

    def _read(self, now: int) -> bool:
        try:
            state, stamp = self.path.read_text().split()
            age = (now - int(stamp)) / 1e9
        except (OSError, ValueError):
            return False
        # A stamp from the future is one from before a reboot (the monotonic clock restarts).
        return state == "up" and 0 <= age < STALE_SECONDS
