"""Durable before the response: request handlers await their event's group commit.

The event loop must never block on a disk flush, and one flush per request would cap the
tracker at the disk's flush rate. So handlers hand their event to one writer thread and
await a future; the writer takes everything queued since its last commit and stores it in
one transaction (one flush for the whole group), then resolves every waiting future at once.
Under load the groups grow by themselves, which is what keeps throughput up.

Requests the flood guard folded (flood.py) do not wait for anything: their counts are merged
here per token and written in the same transaction as the next group of events, or alone at
most ``FOLD_FLUSH_SECONDS`` after the first of them when no event comes (a flood of repeats
then costs one small commit a second, not one per request). A crash can lose the counts of
that last second; the events themselves keep the durable-before-response contract.

With a journal (events/journal.py, what the tracker runs with), the group is appended to the
worker's journal file and flushed instead, and the store insert happens after the answers, in
the journal's indexer thread; folded counts go with it. Without one (tests, tools), the group
is committed to the store as before.
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
from ..events.journal import Indexer, Journal, encode_payloads
from ..events.store import EventStore, StoreUnavailable

log = structlog.get_logger("smtpapi_milter.tracker")

_Waiter = tuple[list[dict[str, Any]], asyncio.Future[None]]
FOLD_FLUSH_SECONDS = 1.0


class RecorderStopped(Exception):
    """The recorder was stopped; the event was not stored."""


class EventRecorder:
    """One writer thread in front of an :class:`EventStore`.

    ``record`` raises what the store raised (StoreUnavailable) so the handler can answer
    503 rather than acknowledge an event that is not stored.
    """

    def __init__(self, store: EventStore, max_group: int = 5000, journal: Journal | None = None):
        self.store = store
        self.max_group = max_group
        self.journal = journal
        self.indexer = Indexer(store, journal, max_group) if journal is not None else None
        self._pending: deque[_Waiter] = deque()
        self._folds: dict[str, FloodCount] = {}  # token key -> counts not yet written
        self._folds_due = 0.0  # monotonic time by which they are written
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.groups = 0  # commits made, for /metrics
        self.stored = 0  # events stored

    def start(self) -> EventRecorder:
        if self.indexer is not None:
            self.indexer.start()
        self._thread.start()
        return self

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Return once ``events`` are committed and flushed; raise if they could not be."""
        if self.indexer is not None and not self.indexer.healthy:
            # Journaled clicks would wait for a store that is not there: 503, as without one.
            raise StoreUnavailable("event store unavailable")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._wakeup:
            if self._stopping:
                raise RecorderStopped("tracker is shutting down")
            self._pending.append((events, future))
            self._wakeup.notify()
        await future

    def fold(self, count: FloodCount) -> None:
        """Add a folded request to its token's counter (written with the next commit)."""
        with self._wakeup:
            pending = self._folds.get(count.token_key)
            if pending is not None:
                pending.merge(count)
                return
            if not self._folds:  # the first since the last write: the writer sets its timer
                self._folds_due = time.monotonic() + FOLD_FLUSH_SECONDS
                self._wakeup.notify()
            self._folds[count.token_key] = count

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the writer thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.indexer is not None:
            self.indexer.stop(timeout)
            self.journal.close()

    def _take(self) -> tuple[list[_Waiter], list[FloodCount]] | None:
        with self._wakeup:
            while not self._pending:
                if self._stopping:
                    return ([], self._take_folds()) if self._folds else None
                if not self._folds:
                    self._wakeup.wait()
                    continue
                wait = self._folds_due - time.monotonic()
                if wait <= 0:
                    return [], self._take_folds()
                self._wakeup.wait(wait)
            group = []
            while self._pending and len(group) < self.max_group:
                group.append(self._pending.popleft())
            return group, self._take_folds()

    def _take_folds(self) -> list[FloodCount]:
        folds, self._folds = list(self._folds.values()), {}
        return folds

    def _run(self) -> None:
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
        self, group: list[_Waiter], events: list[dict[str, Any]], folds: list[FloodCount]
    ) -> None:
        """Flush the group to the journal, answer it, then hand it to the indexer."""
        try:
            # One record per group: the events of every request of it, in order.
            payloads = encode_payloads(events)  # once: the journal's and the store's text
            groups, texts = ([events], [payloads]) if events else ([], [])
            name, end, retired = self.journal.append(groups, texts)
        except OSError as exc:
            log.warning("events not journaled", error=str(exc), events=len(events))
            self._keep_folds(folds)
            _resolve(group, StoreUnavailable(f"events not journaled: {exc}"))
            return
        _resolve(group, None)
        self.groups += 1
        self.stored += len(events)
        self.indexer.submit(name, end, events, folds, retired, payloads)

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


def _resolve(group: list[_Waiter], error: BaseException | None) -> None:
    """Wake every handler of ``group``, one hop into each event loop involved."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, future in group:
        by_loop.setdefault(future.get_loop(), []).append(future)
    for loop, futures in by_loop.items():
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
