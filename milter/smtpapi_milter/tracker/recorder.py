"""Durable before the response: request handlers await their event's group commit.

The event loop must never block on a disk flush, and one flush per request would cap the
tracker at the disk's flush rate. So handlers hand their event to one writer thread and
await a future; the writer takes everything queued since its last commit and stores it in
one transaction (one flush for the whole group), then resolves every waiting future at once.
Under load the groups grow by themselves, which is what keeps throughput up.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Any

import structlog

from ..events.store import EventStore

log = structlog.get_logger("smtpapi_milter.tracker")

_Waiter = tuple[list[dict[str, Any]], asyncio.Future[None]]


class RecorderStopped(Exception):
    """The recorder was stopped; the event was not stored."""


class EventRecorder:
    """One writer thread in front of an :class:`EventStore`.

    ``record`` raises what the store raised (StoreUnavailable) so the handler can answer
    503 rather than acknowledge an event that is not stored.
    """

    def __init__(self, store: EventStore, max_group: int = 5000):
        self.store = store
        self.max_group = max_group
        self._pending: deque[_Waiter] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.groups = 0  # commits made, for /metrics
        self.stored = 0  # events stored

    def start(self) -> EventRecorder:
        self._thread.start()
        return self

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Return once ``events`` are committed and flushed; raise if they could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._wakeup:
            if self._stopping:
                raise RecorderStopped("tracker is shutting down")
            self._pending.append((events, future))
            self._wakeup.notify()
        await future

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the writer thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[_Waiter] | None:
        with self._wakeup:
            while not self._pending:
                if self._stopping:
                    return None
                self._wakeup.wait()
            group = []
            while self._pending and len(group) < self.max_group:
                group.append(self._pending.popleft())
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            error: BaseException | None = None
            events = [event for request_events, _ in group for event in request_events]
            try:
                self.store.record(events)
                self.groups += 1
                self.stored += len(events)
            except Exception as exc:  # every waiter learns it; the handlers answer 503
                error = exc
                log.warning("events not stored", error=str(exc), events=len(events))
            _resolve(group, error)


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
