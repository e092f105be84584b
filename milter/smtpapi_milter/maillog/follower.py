"""The follower's loop: read a batch of lines, turn them into events, commit the events and
the position after the batch in one transaction, repeat (SPEC 13).

A batch is up to ``[maillog] batch_lines`` lines, or what is there when the log is idle, so
a busy log costs one durable commit per many thousand lines and a quiet one shows each
outcome within ``poll_interval``. SIGTERM (or SIGINT) ends the loop between batches: what
was committed is exactly what was read. A store that is down is waited for, the batch kept.

A batch's COMMIT may go on while the next batch is read and parsed (SQLite: on a thread of
its own, events/commit_behind.py): neither touches the store. The next batch's events are
made only once that commit is done, since they read what it stored (delays counted towards
``num_retries``); if it failed, its batch is committed again first.
"""

from __future__ import annotations

import collections
import contextlib
import operator
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from ..collector import collector_paused
from ..delivery.bounce_class import BounceClassifier
from ..events.store import StoreUnavailable
from ..signal_thread import call_on_stop_signals
from ..suppression.bounces import DEFAULT_CLASSES, suppress_bounces
from . import join, position
from .file_source import FileSource
from .lines import LogLine, parse_syslog_bytes
from .marked import marked_lines
from .outcome import BOUNCED, DEFERRED, DELIVERED, MessageExpired, Outcome
from .outcome_events import expired_outcome, outcome_event, outcome_row

log = structlog.get_logger("smtpapi_milter.maillog")

STORE_RETRY = 2.0  # seconds between attempts while the store is down
# Pages a batch's transaction may keep in memory (SQLite): a batch of 100,000 lines dirties
# some 40 MiB of them (bench/maillog_bench.py), most of it the indexes its outcomes join.
WRITE_CACHE_KIB = 64 * 1024


class Follower:
    """Follows one source with one parser into one store; see :func:`run_follower`."""

    bounce_classes: frozenset[int] = DEFAULT_CLASSES  # [suppression] bounce_classes

    def __init__(
        self,
        store: Any,
        source: Any,
        parser: Any,
        classifier: BounceClassifier,
        *,
        record_unknown: bool = False,
        batch_lines: int = 100_000,
        poll_interval: float = 0.5,
    ):
        self.store = store
        self.source = source
        self.parser = parser
        self.classifier = classifier
        self.record_unknown = record_unknown
        self.batch_lines = batch_lines
        self.poll_interval = poll_interval
        self.stopping = threading.Event()
        self.stored = 0  # events committed so far
        self.store_failures = 0  # batches the store could not take (each retried)
        # The batch whose commit is going on: what it was made of, its events of each type
        # (not the events: freed now, their memory serves the next batch), and the store's
        # function that waits for the commit.
        self._pending: tuple[list, Any, collections.Counter, Callable[[], None]] | None = None
        with contextlib.suppress(StoreUnavailable):  # only faster: a store down can wait
            store.prefer_large_writes(WRITE_CACHE_KIB)

    def run(self) -> None:
        """Follow until :meth:`stop`; each batch is committed before the next is read."""
        while not self.stopping.is_set():
            if self._batch() is None:
                self.stopping.wait(self.poll_interval)
        self._settle()

    def run_once(self) -> int:
        """Handle everything the source has now (tests, benchmarks); returns lines read."""
        total = 0
        while (read := self._batch()) is not None:
            total += read
        return total

    def _batch(self) -> int | None:
        """Read, turn into events and commit one batch: the lines read, None if none were."""
        with collector_paused():
            lines, where = self._read()
            if where is None:
                self._settle()
                return None
            found = self.parse(lines)  # once: the parser keeps state across lines
            # Stopping with the previous batch not stored: this one is not stored either (a
            # position past both would skip the first).
            if self._settle():
                self._commit_retrying(found, where)
            return len(lines)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _read(self) -> tuple[list[LogLine], Any]:
        """The next batch and the position after it; (..., None) when nothing is new.

        Lines of other shapes count as read: the position moves past them, as past lines
        without any of the parser's markers (never parsed)."""
        if not isinstance(self.source, FileSource):
            return self.source.read_entries(self.batch_lines)
        blocks, where = self.source.read_blocks(self.batch_lines)
        now = time.time()
        parsed = [
            parse_syslog_bytes(line, now) for line in marked_lines(blocks, self.parser.MARKERS)
        ]
        return [line for line in parsed if line is not None], where

    def _commit_retrying(self, found: list[Outcome | MessageExpired], where: Any) -> bool:
        """Start committing a batch (see :meth:`_settle`); False if stopping first."""
        while True:
            try:
                events = self.events_for(found)
                committed = self._commit(events, where)
                kinds = collections.Counter(map(operator.itemgetter("type"), events))
                self._pending = (found, where, kinds, committed)
                return True
            except StoreUnavailable as exc:
                if not self._keep_trying(exc):
                    return False  # stopping: the batch is read again at the next start

    def _settle(self) -> bool:
        """Wait for the commit going on, if any, committing its batch again until it is
        stored; False if stopping first (that batch is read again at the next start)."""
        while self._pending is not None:
            found, where, kinds, committed = self._pending
            self._pending = None
            try:
                committed()
            except StoreUnavailable as exc:
                if not self._keep_trying(exc) or not self._commit_retrying(found, where):
                    return False
                continue
            self.stored += kinds.total()
            if kinds:  # one line per batch: a busy log would flood the journal otherwise
                log.info("stored", **kinds)
        return True

    def _keep_trying(self, exc: StoreUnavailable) -> bool:
        """Count and log a batch the store could not take; wait before the next attempt.
        False if stopping meanwhile."""
        self.store_failures += 1
        log.error("event store unavailable, batch kept", error=str(exc))
        return not self.stopping.wait(STORE_RETRY)

    def _commit(self, events: list[dict[str, Any]], where: Any) -> Callable[[], None]:
        """Store a batch's events and the position after it in one transaction; returns
        the store's function that waits for its commit."""
        # Only bounces can suppress (one pass in C, not one call per event).
        bounces = [event for event in events if event["type"] == BOUNCED]

        def work(cur: Any) -> None:
            self.store.insert_events(cur, events, rows=map(outcome_row, events))
            suppress_bounces(self.store, cur, bounces, self.bounce_classes)  # same commit
            position.save(self.store, cur, self.source.name, where)

        return self.store.commit_behind(work)

    def parse(self, lines: list[LogLine]) -> list[Outcome | MessageExpired]:
        """What a batch of lines tells, in order."""
        found: list[Outcome | MessageExpired] = []
        for line in lines:
            found += self.parser.feed_all(line)
        return found

    def events_for(self, found: list[Outcome | MessageExpired]) -> list[dict[str, Any]]:
        """The events a batch's outcomes produce (reads the store, writes nothing)."""
        if not found:
            return []
        expired = [item.queue_id for item in found if isinstance(item, MessageExpired)]
        known = join.lookup(self.store, (item.queue_id for item in found), expired)
        batch_delays = join.counter()
        events: list[dict[str, Any]] = []
        for item in found:
            if isinstance(item, MessageExpired):
                events += self._expired(item, known, events)
                continue
            event = self._event(item, known, batch_delays)
            if event is not None:
                events.append(event)
        return events

    def _event(
        self, outcome: Outcome, known: join.Known, batch_delays: dict[tuple[str, str], int]
    ) -> dict[str, Any] | None:
        injections = known.injections.get(outcome.queue_id)
        injection = join.injection_for(injections, outcome) if injections else None
        if injection is None and not self.record_unknown:
            return None
        kind = outcome.kind
        bounce_class = None if kind == DELIVERED else self._classify(outcome)
        event = outcome_event(outcome, injection, 0, bounce_class)
        key = (outcome.queue_id, event["rcpt_to"])
        retries = known.delays.get(key, 0) + batch_delays.get(key, 0)
        if retries:
            event["num_retries"] = str(retries)
        if kind == DEFERRED:
            batch_delays[key] += 1
        return event

    def _expired(
        self, expired: MessageExpired, known: join.Known, so_far: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Bounces for the recipients of an expired message that have no final outcome."""
        history = known.outcomes.get(expired.queue_id, []) + [
            e for e in so_far if e.get("mta_queue_id") == expired.queue_id
        ]
        events = []
        for injection in known.injections.get(expired.queue_id, []):
            rcpt = injection.get("rcpt_to", "")
            mine = [e for e in history if e.get("rcpt_to") == rcpt]
            if any(e["type"] in ("delivery", "bounce") for e in mine):
                continue
            delays = [e for e in mine if e["type"] == DEFERRED]
            outcome = expired_outcome(expired, injection, delays[-1] if delays else None)
            event = outcome_event(outcome, injection, len(delays), self._classify(outcome))
            events.append(event)
        return events

    def _classify(self, outcome: Outcome) -> int:
        code = int(outcome.code) if outcome.code else None
        return self.classifier.classify(outcome.enhanced or None, code, outcome.reply)


def install_signal_handlers(stop: Callable[[], object]) -> None:
    """SIGTERM and SIGINT end the loop after the batch in hand is committed. SIGHUP (which
    ``run`` passes to every child) is ignored: ``[maillog]`` changes take a restart."""
    call_on_stop_signals(stop)  # not from the handler itself: signal_thread.py says why
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
