"""Journal flushes that overlap, answered in the order they were written.

The recorder used to write a group of events to the journal, ``fdatasync`` it, answer it, and
only then write the next group: a click arriving during a flush waited for the rest of that
flush and all of the next (1.5 flushes on average). On the benchmark's virtual machine a
flush whose process has nothing else to do takes a whole 4 ms timer tick (the idle vCPU
learns of the completion late; ~0.1 ms while a CPU is busy, measured with /tmp fdatasync
loops), so with a worker's 32 connections each waiting ~6 ms the tracker could not pass
~11,000 clicks/s on two workers however little CPU a click cost.

Here the writer thread only writes (page cache, microseconds) and hands the flush to one of
``slots`` flush threads, so a group's flush starts as soon as it is written, while earlier
ones are still under way. What keeps this as safe as one flush at a time:

- answers go out in write order: a group is answered only when its own flush and those of
  every group written before it succeeded (a later flush covers earlier writes too, but its
  success says nothing about an earlier group's write-back error);
- each slot flushes through its own open file description of the journal, so a write-back
  error is reported to every flush that follows it (Linux reports one once per open file
  description), not to whichever flush happens to look first;
- after a failed flush, that group and every group written after it are answered 503, and
  once none is in flight the file is cut back to where the failed group began, before
  anything else is written (the reader stops at the first bad record: an unflushed hole must
  never sit in front of acknowledged records);
- a new journal file is begun only with no flush in flight (the old file's flush
  descriptors are closed then), and the indexer is handed groups in write order, so the
  position stored with them only grows.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from ..events.floods import FloodCount
from ..events.journal import Indexer, Journal, encode_payloads
from ..events.store import StoreUnavailable

log = structlog.get_logger("smtpapi_milter.tracker")

# Flushes under way at once per worker. One is the old behaviour; two let the next group's
# flush start while one is in flight, which is what removes the wait (a third measured no
# better: see the commit that chose this).
SLOTS = 2

Events = list[dict[str, Any]]


class _Written:
    """One group written to the journal, waiting for its flush (and earlier ones)."""

    __slots__ = (
        "done",
        "end",
        "error",
        "events",
        "folds",
        "group",
        "name",
        "payloads",
        "retired",
        "start",
    )

    def __init__(
        self,
        group: list[Any],
        events: Events,
        folds: list[FloodCount],
        payloads: list[str],
        written: tuple[str, int, int, str | None],
    ):
        self.group, self.events, self.folds, self.payloads = group, events, folds, payloads
        self.name, self.start, self.end, self.retired = written
        self.done = self.end == self.start  # nothing to flush (folded counts only)
        self.error: BaseException | None = None


class FlushPipeline:
    """Used by the recorder's one writer thread (``wait_for_slot``, ``write``, ``drain``);
    the flush threads answer through ``answer(group, error)`` and hand what they answered
    to ``indexer``; ``keep_folds`` takes back counts whose group could not be journaled."""

    def __init__(
        self,
        journal: Journal,
        indexer: Indexer,
        answer: Callable[[list[Any], BaseException | None], None],
        keep_folds: Callable[[list[FloodCount]], None],
        slots: int = SLOTS,
    ):
        self.journal = journal
        self.indexer = indexer
        self._answer = answer
        self._keep_folds = keep_folds
        self._free = list(range(slots))
        self._written: deque[_Written] = deque()  # in write order
        self._cut_at: int | None = None  # a flush failed: cut the file here when idle
        self._changed = threading.Condition()
        self._flushers = ThreadPoolExecutor(slots, thread_name_prefix="journal-flush")
        self.groups = 0  # groups answered, events answered (for /metrics)
        self.stored = 0

    def wait_for_slot(self) -> None:
        """Until a flush can start now (requests meanwhile gather into the next group)."""
        with self._changed:
            while not self._free:
                self._changed.wait()

    def write(self, group: list[Any], events: Events, folds: list[FloodCount]) -> None:
        """Journal ``events`` (the requests of ``group``) and start their flush."""
        with self._changed:
            # Cutting the file, or leaving it for a new one, needs every flush over.
            while self._written and (self._cut_at is not None or self.journal.rotation_due):
                self._changed.wait()
            if self._cut_at is not None:
                self.journal.cut(self._cut_at)
                self._cut_at = None
            while not self._free:
                self._changed.wait()
        try:
            payloads = encode_payloads(events)  # once: the journal's and the store's text
            groups, texts = ([events], [payloads]) if events else ([], [])
            entry = _Written(group, events, folds, payloads, self.journal.write(groups, texts))
        except OSError as exc:  # nothing of it is in the file (write cut its own tail)
            log.warning("events not journaled", error=str(exc), events=len(events))
            self._keep_folds(folds)
            self._answer(group, StoreUnavailable(f"events not journaled: {exc}"))
            return
        with self._changed:
            self._written.append(entry)
            if entry.done:
                self._settle()
                return
            slot = self._free.pop()
        descriptor = self.journal.sync_descriptor(slot)
        self._flushers.submit(self._flush, entry, slot, descriptor)

    def drain(self) -> None:
        """Until every written group is answered."""
        with self._changed:
            while self._written:
                self._changed.wait()

    def close(self) -> None:
        self.drain()
        self._flushers.shutdown()

    def _flush(self, entry: _Written, slot: int, descriptor: int) -> None:
        try:
            os.fdatasync(descriptor)
        except OSError as exc:
            entry.error = exc
        with self._changed:
            entry.done = True
            self._free.append(slot)
            self._settle()
            self._changed.notify_all()

    def _settle(self) -> None:
        """Answer the groups at the front whose flushes are over, in write order."""
        written = self._written
        while written and written[0].done:
            entry = written.popleft()
            if entry.error is not None and self._cut_at is None:
                log.warning("events not journaled", error=str(entry.error))
                self._cut_at = entry.start
            if self._cut_at is not None:  # this one failed, or an earlier one did
                self._keep_folds(entry.folds)
                self._answer(entry.group, StoreUnavailable("events not journaled"))
                continue
            self._answer(entry.group, None)
            self.groups += 1
            self.stored += len(entry.events)
            self.indexer.submit(
                entry.name, entry.end, entry.events, entry.folds, entry.retired, entry.payloads
            )
