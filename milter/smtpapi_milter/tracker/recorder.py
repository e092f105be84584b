"""Durable before the response: request handlers await their event's group commit.

The event loop must never block on a disk flush, and one flush per request would cap the
tracker at the disk's flush rate. So handlers hand their event to one writer thread and
await a future; the writer takes everything queued since its last commit and stores it in
one transaction (one flush for the whole group), then resolves every waiting future at once.
Under load the groups grow by themselves, which is what keeps throughput up.

They are also helped to grow, as PostgreSQL's ``commit_delay`` does: a flush starts no
sooner than ``COMMIT_DELAY`` after the one before it started, so requests arriving meanwhile
share it. The first request after a pause finds the last flush long past and is flushed at
once; under load every request waits at most that much longer. Without it the live tracker
(bench/tracker_threads.py, 2 workers, ~10,000 clicks/s) flushed groups of 1-2 clicks, each
a write, a flush, a wake-up of this thread and one of the event loop: 0.7 context switches
of the writer per click, 0.5 with 2 ms. In one process (bench/tracker_cpu.py) 24 -> 45
events per flush, writer 14-20 -> 8 us per click. At ~4,100 clicks/s (half the peak), p99
8.3 ms instead of 10.4 (tracker_bench.py's paced wrk, 3 alternating pairs): less CPU, less
queueing; 4 ms added 1 ms to p50 and made p99 worse.

Requests the flood guard folded (flood.py) do not wait for anything: their counts are merged
here per token and written in the same transaction as the next group of events, or alone at
most ``FOLD_FLUSH_SECONDS`` after the first of them when no event comes (a flood of repeats
then costs one small commit a second, not one per request). A crash can lose the counts of
that last second; the events themselves keep the durable-before-response contract.

With a journal (events/journal.py, what the tracker runs with), the group is appended to the
worker's journal file and flushed instead, folded counts as a record after it, and the store
insert happens after the answers, in the node's journal indexer (events/journal_indexer.py),
whose status says whether the store takes them. Without one (tests, tools), the group is
committed to the store as before.

The journal is appended by the event loop itself, not by the writer thread: the first
request of a loop iteration schedules the flush as the loop's next callback, every request
handled before it runs joins the group, and the loop waits for the flush (an ``O_DSYNC``
write into zeros already on disk: one system call, the GIL let go meanwhile), then wakes
the group's handlers directly. While it waits, the requests that arrive queue up in
Granian and make the next group, so groups grow with the load as the writer's did, with no
pacing. What the thread cost: its wake-ups, the GIL taken from and given back to the loop
twice a group, a hop back into the loop (call_soon_threadsafe); live (tracker_threads.py,
2 workers under wrk, 3 pairs of runs alternating) 191.2, 170.9 and 184.5 us of CPU per
click with the thread, 175.0, 142.8 and 147.4 with the loop appending (the writer's 25-28
us gone, the loop's own 10-14 us more), and 7.7k-8.3k clicks/s against 8.0k-9.9k. A
worker's CPU work and its disk wait no longer overlap (the other worker's do), and its
other routes (/healthz, /u/) wait while a flush does: a millisecond or two on a loaded
disk, tens of milliseconds in a stall (clicks wait for it either way). p99 at half the peak
was no worse nor better than with the thread in side-by-side runs on a noisy host. The thread
still writes folded counts that no group of events takes along (and commits groups to the
store without a journal, where a flush is an SQLite transaction the loop must not wait
for).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import Any

import structlog

from ..events.floods import FloodCount
from ..events.journal import Journal, encode_payloads
from ..events.journal_indexer import IndexerStatus
from ..events.store import EventStore, StoreUnavailable
from ..thread_names import name_this_thread

log = structlog.get_logger("smtpapi_milter.tracker")

_Waiter = tuple[list[dict[str, Any]], asyncio.Future[None]]
FOLD_FLUSH_SECONDS = 1.0
# Least time from the start of one group's flush to the start of the next (see above).
COMMIT_DELAY = 0.002


class RecorderStopped(Exception):
    """The recorder was stopped; the event was not stored."""


class EventRecorder:
    """The event loops' journal flushes, and one writer thread in front of an
    :class:`EventStore` (see the module's docstring).

    ``record`` raises what the store raised (StoreUnavailable) so the handler can answer
    503 rather than acknowledge an event that is not stored.
    """

    def __init__(
        self,
        store: EventStore,
        max_group: int = 5000,
        journal: Journal | None = None,
        commit_delay: float = COMMIT_DELAY,
    ):
        self.store = store
        self.max_group = max_group
        self.commit_delay = commit_delay
        self.journal = journal
        # Whether journaled clicks reach the store (the indexer's word), else None.
        self.indexer_status = IndexerStatus(journal.directory) if journal is not None else None
        self._pending: deque[_Waiter] = deque()
        self._folds: dict[str, FloodCount] = {}  # token key -> counts not yet written
        self._folds_due = 0.0  # monotonic time by which they are written
        # record takes the plain lock: Condition's __enter__ and __exit__ are two Python
        # calls more a click.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        # The writer waits for a first request (or a fold's timer), not pacing a group:
        # only then do record and fold wake it. Woken for every request while it paced,
        # it took the GIL each time just to go back to sleep.
        self._idle = False
        self._next_flush = 0.0  # monotonic time before which no group is flushed
        # With a journal: requests waiting for their loop's flush, and the loops that have
        # one scheduled. Appends (the loops' and the thread's folds) take turns.
        self._journaling: list[_Waiter] = []
        self._flushing: set[asyncio.AbstractEventLoop] = set()
        self._append_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.groups = 0  # commits made, for /metrics
        self.stored = 0  # events stored

    def start(self) -> EventRecorder:
        self._thread.start()
        return self

    async def record(
        self, events: list[dict[str, Any]], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Return once ``events`` are committed and flushed; raise if they could not be.

        ``loop``: the running event loop, when the caller knows it. On Python 3.11
        asyncio.get_running_loop() makes a getpid system call each time (it checks for a
        fork): 3 % of a live worker's event-loop samples (py-spy), once per click."""
        if self.indexer_status is not None and not self.indexer_status.up():
            # Journaled clicks would wait for a store that is not there (or for no indexer):
            # 503, as without a journal.
            raise StoreUnavailable("event store unavailable")
        loop = loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._stopping:
                raise RecorderStopped("tracker is shutting down")
            if self.journal is not None:
                self._journaling.append((events, future))
                if loop not in self._flushing:  # the first of this iteration: the flush
                    self._flushing.add(loop)
                    loop.call_soon(self._flush_journal, loop)
                    # (call_soon, not threadsafe: this is the loop's own thread)
            else:
                self._pending.append((events, future))
                if self._idle or len(self._pending) == self.max_group:
                    # Once: until the woken writer holds the lock again, every click would
                    # notify it again (39.6k notify calls for 40k clicks, tracker_cpu.py).
                    self._idle = False
                    self._wakeup.notify()
        await future

    def _flush_journal(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Append every request waiting for a journal flush, with the folded counts, and
        answer them (``loop``'s at once: this runs in its thread)."""
        with self._lock:
            self._flushing.discard(loop)
            group, self._journaling = self._journaling, []
            folds = self._take_folds() if group else []
        if group:
            events = [event for request_events, _ in group for event in request_events]
            self._journal(group, events, folds, here=loop)

    def fold(self, count: FloodCount) -> None:
        """Add a folded request to its token's counter (written with the next commit)."""
        with self._wakeup:
            pending = self._folds.get(count.token_key)
            if pending is not None:
                pending.merge(count)
                return
            if not self._folds:  # the first since the last write: the writer sets its timer
                self._folds_due = time.monotonic() + FOLD_FLUSH_SECONDS
                if self._idle:
                    self._idle = False
                    self._wakeup.notify()
            self._folds[count.token_key] = count

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued (the requests whose loop has not flushed them yet too),
        then end the writer thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        # Requests whose loop has not run their flush yet (it may never run again).
        self._flush_journal(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.journal is not None:
            with self._append_lock:  # after an append another thread may be making
                self.journal.close()  # the indexer finishes the file and deletes it

    def _take(self) -> tuple[list[_Waiter], list[FloodCount]] | None:
        with self._wakeup:
            while not self._pending:
                if self._stopping:
                    return ([], self._take_folds()) if self._folds else None
                if not self._folds:
                    self._idle_wait(None)
                    continue
                wait = self._folds_due - time.monotonic()
                if wait <= 0:
                    return [], self._take_folds()
                self._idle_wait(wait)
            # Pacing: let the group grow until the next flush is due (or it is full).
            while not self._stopping and len(self._pending) < self.max_group:
                wait = self._next_flush - time.monotonic()
                if wait <= 0:
                    break
                self._wakeup.wait(wait)
            self._next_flush = time.monotonic() + self.commit_delay
            group = []
            while self._pending and len(group) < self.max_group:
                group.append(self._pending.popleft())
            return group, self._take_folds()

    def _idle_wait(self, timeout: float | None) -> None:
        self._idle = True
        try:
            self._wakeup.wait(timeout)
        finally:
            self._idle = False

    def _take_folds(self) -> list[FloodCount]:
        folds, self._folds = list(self._folds.values()), {}
        return folds

    def _run(self) -> None:
        name_this_thread(self._thread.name)
        while (taken := self._take()) is not None:
            group, folds = taken
            error: BaseException | None = None
            events = [event for request_events, _ in group for event in request_events]
            if self.journal is not None:
                self._journal(group, events, folds)
                continue
            try:
                self.store.record(events, folds)
                self.groups += 1
                self.stored += len(events)
            except Exception as exc:  # every waiter learns it; the handlers answer 503
                error = exc
                log.warning("events not stored", error=str(exc), events=len(events))
                self._keep_folds(folds)
            _resolve(group, error)

    def _journal(
        self,
        group: list[_Waiter],
        events: list[dict[str, Any]],
        folds: list[FloodCount],
        here: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Flush the group and the folded counts to the journal, then answer the group
        (the handlers of loop ``here``, the running one, directly)."""
        try:
            # One record per group: the events of every request of it, in order.
            groups, texts = ([events], [encode_payloads(events)]) if events else ([], [])
            with self._append_lock:
                self.journal.append(groups, texts, folds)
                self.groups += 1
                self.stored += len(events)
        except Exception as exc:  # the disk refused (OSError), or a bug: 503, never a hang
            log.warning("events not journaled", error=str(exc), events=len(events))
            self._keep_folds(folds)
            _resolve(group, StoreUnavailable(f"events not journaled: {exc}"), here)
            return
        _resolve(group, None, here)

    def _keep_folds(self, folds: list[FloodCount]) -> None:
        """Counts that could not be written go with the next commit (unless stopping)."""
        with self._wakeup:
            if self._stopping:
                if folds:
                    log.warning("folded request counts lost", tokens=len(folds))
                return
            if folds and not self._folds:
                self._folds_due = time.monotonic() + FOLD_FLUSH_SECONDS
            for count in folds:
                pending = self._folds.get(count.token_key)
                if pending is None:
                    self._folds[count.token_key] = count
                else:
                    pending.merge(count)


def _resolve(
    group: list[_Waiter], error: BaseException | None, here: asyncio.AbstractEventLoop | None = None
) -> None:
    """Wake every handler of ``group``: those of loop ``here`` (the running one) at once,
    the others with one hop into each event loop involved."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, future in group:
        by_loop.setdefault(future.get_loop(), []).append(future)
    for loop, futures in by_loop.items():
        if loop is here:
            _settle(futures, error)
            continue
        # A closed loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the client went away and the handler was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
