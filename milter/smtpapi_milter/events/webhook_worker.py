"""The delivery loop of one webhook endpoint, in a thread of its own.

Per endpoint, events go out in id order, one batch at a time: collect the events after the
stored cursor (of the wanted types) until ``max_batch`` of them are waiting or the oldest has
waited ``max_wait``; write the batch down as in flight; POST it until a 2xx comes back or its
retry window closes; move the cursor past it; repeat. A failing endpoint only ever holds up
itself. Whatever goes wrong with the store, the worker forgets what it holds in memory and
starts again from the stored cursor, which is always safe (see webhook_cursor).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from ..config import WebhookConfig
from .model import EVENT_CLASSES
from .store import EventStore, StoreUnavailable
from .webhook_cursor import CursorState, EndpointCursor, InFlight, LeaseLost
from .webhook_http import Poster, PostResult, batch_body, request_headers

log = structlog.get_logger("smtpapi_milter.events.webhooks")


@dataclass(frozen=True)
class DeliveryTuning:
    """How delivery paces itself; the defaults are SparkPost's (SPEC 7), tests shrink them."""

    max_batch: int = 10_000  # events per POST
    max_wait: float = 30.0  # seconds the oldest waiting event waits for more to join it
    timeout: float = 10.0  # seconds for a whole POST, connect to last byte of the answer
    retry_window: float = 8 * 3600.0  # after this a failing batch is given up
    retry_base: float = 5.0  # first retry after 2.5-5 s, then doubling (with jitter) ...
    retry_cap: float = 600.0  # ... up to 5-10 minutes between attempts
    poll_interval: float = 2.0  # look for new events this often without notify()
    scan_gap: float = 0.2  # at most this often, however often notify() is called
    lease_seconds: float = 60.0  # another node may take an endpoint over after this
    store_retry: float = 5.0  # pause after the store failed
    start_at: Literal["latest", "earliest"] = "latest"  # where a new endpoint starts

    def __post_init__(self) -> None:
        for name in ("max_wait", "timeout", "retry_window", "retry_base", "retry_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"webhook delivery {name} must not be negative")
        for name in ("poll_interval", "lease_seconds", "store_retry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"webhook delivery {name} must be positive")
        if self.max_batch < 1:
            raise ValueError("webhook delivery max_batch must be at least 1")


@dataclass
class EndpointStats:
    """Counters of one endpoint since this process started (for /metrics and tests)."""

    batches_delivered: int = 0
    batches_failed: int = 0  # failed POST attempts; a batch may fail many times
    batches_given_up: int = 0
    events_delivered: int = 0
    events_given_up: int = 0
    holds_lease: bool = False
    last_error: str = ""


@dataclass
class _Batch:
    flight: InFlight
    events: list[dict[str, Any]]
    body: bytes
    attempts: int = 0
    next_attempt: float = 0.0  # time.monotonic()
    born: float = 0.0  # unix seconds the retry window counts from


class EndpointWorker:
    """Delivers one endpoint; see :class:`~.webhooks.WebhookDispatcher` for the lifecycle."""

    def __init__(
        self,
        store: EventStore,
        hook: WebhookConfig,
        cursor: EndpointCursor,
        tuning: DeliveryTuning,
        *,
        clock: Callable[[], float],
        poster: Poster,
    ):
        self.hook = hook
        self.key = cursor.endpoint
        self.label = cursor.label
        self.stats = EndpointStats()
        self._store = store
        self._cursor = cursor
        self._tuning = tuning
        self._clock = clock
        self._poster = poster
        self._types = tuple(hook.events) if hook.events else None
        self._rng = random.Random()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"webhook {self.label}", daemon=True)
        self._log = log.bind(endpoint=self.label)
        self._next_acquire = 0.0
        self._forget()

    # --- lifecycle, called from other threads ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New events may be stored: look now instead of at the next poll."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop soon: cut a POST in progress (the batch stays in flight for next time)."""
        self._stopping.set()
        self._poster.abort()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the loop ----------------------------------------------------------------------------

    def _forget(self) -> None:
        """Drop everything held in memory; the next cycle reloads from the store."""
        self._loaded = False
        self._delivered = 0
        self._scanned = 0
        self._pending: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._batch: _Batch | None = None
        self._next_renew = 0.0
        self._next_scan = 0.0
        self._next_advance = 0.0

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                delay = self._cycle()
            except LeaseLost as exc:
                self._log.warning("webhook lease lost; another node delivers now", error=str(exc))
                self.stats.holds_lease = False
                self._forget()
                delay = self._tuning.lease_seconds / 3
            except StoreUnavailable as exc:
                self._log.warning("webhook delivery paused: store unavailable", error=str(exc))
                self._forget()
                delay = self._tuning.store_retry
            except Exception:
                # Never let one bad event or bug end delivery for good: log, reload, go on.
                self._log.exception("webhook worker failed; starting again from the cursor")
                self._forget()
                delay = self._tuning.store_retry
            if delay > 0:
                self._wake.wait(delay)
        self._release()

    def _release(self) -> None:
        if not self._loaded:
            return
        try:
            self._cursor.release()
        except StoreUnavailable as exc:
            self._log.warning("webhook lease not released (it will expire)", error=str(exc))
        self.stats.holds_lease = False

    def _cycle(self) -> float:
        """One step; returns how long to wait (in seconds) before the next."""
        mono = time.monotonic()
        if not self._loaded:
            if mono < self._next_acquire:
                return self._next_acquire - mono
            self._next_acquire = mono + self._tuning.lease_seconds / 3
            state = self._cursor.acquire(start_at_latest=self._tuning.start_at == "latest")
            if state is None:
                return self._tuning.lease_seconds / 3
            self._load(state)
        elif mono >= self._next_renew:
            self._cursor.renew()
            self._next_renew = mono + self._tuning.lease_seconds / 3
        delay = self._attempt() if self._batch is not None else self._collect()
        return min(delay, max(0.0, self._next_renew - time.monotonic()))

    def _load(self, state: CursorState) -> None:
        self._loaded = True
        self.stats.holds_lease = True
        self._next_renew = time.monotonic() + self._tuning.lease_seconds / 3
        self._delivered = self._scanned = state.delivered_id
        if state.batch is not None:
            events = self._rebuild(state.delivered_id, state.batch)
            self._batch = self._new_batch(state.batch, events)
            self._log.info(
                "webhook batch in flight resumed",
                batch_id=state.batch.batch_id,
                events=len(events),
            )

    def _rebuild(self, after: int, flight: InFlight) -> list[dict[str, Any]]:
        """The events of a stored in-flight batch, read again from the store.

        The id range is final (no write below the cursor horizon is still in flight), so this
        is the batch as first sent, less any events erased since (privacy, retention)."""
        events = []
        while after < flight.last_id and not self._stopping.is_set():
            page = self._store.query_with_ids(after_id=after, limit=self._tuning.max_batch)
            for event_id, event in page:
                if event_id > flight.last_id:
                    return events
                if _wanted(event, flight.types):
                    events.append(event)
            if not page:
                break
            after = page[-1][0]
        return events

    def _new_batch(self, flight: InFlight, events: list[dict[str, Any]]) -> _Batch:
        # The retry window counts from the oldest event, so a long outage drops what is older
        # than the window (as SparkPost does) instead of giving each backlog batch a window of
        # its own; a batch is always tried at least once.
        stamps = [_stamp(event) for event in events]
        born = min([flight.created, *(s for s in stamps if s is not None)])
        return _Batch(flight, events, batch_body(events), born=born)

    def _collect(self) -> float:
        mono = time.monotonic()
        # Scans are spaced by scan_gap however often notify() fires; a wake-up inside the gap
        # waits for its end rather than the next poll, so no notified event waits long.
        held_back = mono < self._next_scan
        if not held_back:
            self._scan()
            self._next_scan = time.monotonic() + self._tuning.scan_gap
        if self._pending and self._pending_since is None:
            self._pending_since = mono
        if self._pending_since is not None and (
            len(self._pending) >= self._tuning.max_batch
            or mono - self._pending_since >= self._tuning.max_wait
        ):
            self._begin()
            return 0.0
        # Unwanted events are skipped in the store too, so a restart need not read them again;
        # at most once per poll, since each such write is a flushed commit.
        if not self._pending and self._scanned > self._delivered and mono >= self._next_advance:
            self._cursor.advance(self._delivered, self._scanned)
            self._delivered = self._scanned
            self._next_advance = mono + self._tuning.poll_interval
        wait = self._tuning.poll_interval
        if self._pending_since is not None:
            wait = min(wait, self._pending_since + self._tuning.max_wait - mono)
        if held_back:
            wait = min(wait, self._next_scan - mono)
        return max(wait, 0.0)

    def _scan(self) -> None:
        """Read the events stored after what was seen, keeping the wanted ones."""
        while not self._stopping.is_set():
            room = self._tuning.max_batch - len(self._pending)
            if room <= 0:
                return
            page = self._store.query_with_ids(after_id=self._scanned, limit=room)
            for event_id, event in page:
                self._scanned = event_id
                if _wanted(event, self._types):
                    self._pending.append(event)
                elif event.get("type") not in EVENT_CLASSES:
                    self._log.warning("event of unknown type not sent", event_id=event_id)
            if len(page) < room:
                return

    def _begin(self) -> None:
        flight = InFlight(
            batch_id=str(uuid.uuid4()),
            last_id=self._scanned,
            types=self._types,
            created=self._clock(),
        )
        self._cursor.begin(self._delivered, flight)
        self._batch = self._new_batch(flight, self._pending)
        self._pending, self._pending_since = [], None

    def _attempt(self) -> float:
        batch = self._batch
        assert batch is not None
        mono = time.monotonic()
        if mono < batch.next_attempt:
            return batch.next_attempt - mono
        self._refresh(batch)
        if self._stopping.is_set():
            return 0.0
        if not batch.events:  # everything in it was erased before it could be (re-)sent
            self._finish(batch)
            return 0.0
        headers = request_headers(self.hook, batch.flight.batch_id, batch.body)
        result = self._poster.post(batch.body, headers)
        batch.attempts += 1
        if result.ok:
            self._delivered_ok(batch, result)
            return 0.0
        if self._stopping.is_set():
            return 0.0  # cut by stop(): not the receiver's failure; re-sent next time
        return self._failed(batch, result)

    def _refresh(self, batch: _Batch) -> None:
        """Read the batch's events again right before each POST.

        An erase (by this process or by ``smtpapi-milter erase`` in another) may have
        deleted some since the batch was built, and a retry must not send them again. The
        batch keeps its id: a re-sent batch holds the same events or fewer, never others,
        so a receiver that de-duplicates on the id already has all of it."""
        events = self._rebuild(self._delivered, batch.flight)
        if self._stopping.is_set():
            return  # the rebuild may have stopped half-way: keep what is held
        if [e.get("event_id") for e in events] != [e.get("event_id") for e in batch.events]:
            batch.events = events
            batch.body = batch_body(events)

    def _delivered_ok(self, batch: _Batch, result: PostResult) -> None:
        self._finish(batch)
        self.stats.batches_delivered += 1
        self.stats.events_delivered += len(batch.events)
        self._log.info(
            "webhook batch delivered",
            batch_id=batch.flight.batch_id,
            events=len(batch.events),
            status=result.status,
            attempt=batch.attempts,
            ms=round(result.seconds * 1000, 1),
        )

    def _failed(self, batch: _Batch, result: PostResult) -> float:
        self.stats.batches_failed += 1
        self.stats.last_error = result.detail
        age = self._clock() - batch.born
        if age >= self._tuning.retry_window:
            self._finish(batch)
            self.stats.batches_given_up += 1
            self.stats.events_given_up += len(batch.events)
            self._log.error(
                "WEBHOOK BATCH GIVEN UP: its events will never reach this endpoint",
                batch_id=batch.flight.batch_id,
                events=len(batch.events),
                attempts=batch.attempts,
                age_seconds=round(age),
                last_error=result.detail,
            )
            return 0.0
        base = self._tuning.retry_base * 2 ** min(batch.attempts - 1, 30)
        delay = min(self._tuning.retry_cap, base) * self._rng.uniform(0.5, 1.0)
        batch.next_attempt = time.monotonic() + delay
        self._log.warning(
            "webhook batch failed; will retry",
            batch_id=batch.flight.batch_id,
            events=len(batch.events),
            attempt=batch.attempts,
            error=result.detail,
            retry_in=round(delay, 3),
        )
        return delay

    def _finish(self, batch: _Batch) -> None:
        self._cursor.finish(batch.flight)
        self._batch = None
        self._delivered = self._scanned = batch.flight.last_id


def _wanted(event: dict[str, Any], types: tuple[str, ...] | None) -> bool:
    kind = event.get("type")
    return kind in EVENT_CLASSES and (types is None or kind in types)


def _stamp(event: dict[str, Any]) -> float | None:
    try:
        return float(event["timestamp"])
    except (KeyError, TypeError, ValueError):
        return None
