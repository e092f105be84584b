"""Clicks journaled through the native writer thread (``_native/journal_writer.c``).

The pure-Python way (recorder.py's writer thread) hands each request to a Python thread and
back: a lock and a notify per request, then that thread takes the GIL to encode, write,
flush and wake the loop. Measured with bench/tracker_cpu.py, the hand-over alone cost the
event loop thread ~10 us of CPU per click (39 us with it, 29 with a future resolved on the
loop itself) and the writer thread ~11 us more, all in a process whose loop thread is what
limits the clicks/s.

Here the loop thread encodes the request's record itself (orjson and the checksum, ~2 us)
and passes the bytes to the native writer, whose thread never takes the GIL: it appends
whatever is pending, ``fdatasync``s it and bumps an eventfd. The loop watches the eventfd
and, once per flush, answers every request whose record is now durable, in order, and
hands them to the indexer as before (one journal record per request: the journal's format
is unchanged, a record holds the events of one group and a group may be one request).

Durability is the same as the Python writer's: a request is answered only after a flush
that began after its record was written; a failed write or flush cuts the file back and
fails that record and every one submitted after it (503), and the writer refuses records
until the loop re-read the file's size (so no offset handed to the indexer ever runs ahead
of the file).

``SMTPAPI_PURE_PYTHON=1`` (or a missing extension) keeps the Python writer thread, which
stays as the reference: tests run both and compare the journals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from typing import Any

from ..events.journal import ROTATE_BYTES, Indexer, Journal, encode_payloads, encode_record
from ..events.store import StoreUnavailable

Writer: Any = None
if not os.environ.get("SMTPAPI_PURE_PYTHON"):
    try:
        from .._native.journal_writer import Writer
    except ImportError:  # the pure-Python writer thread does the work
        Writer = None

Events = list[dict[str, Any]]


def available() -> bool:
    return Writer is not None


class _Waiting:
    __slots__ = ("end", "events", "future", "name", "number", "payloads", "retired")

    def __init__(
        self,
        number: int,
        future: asyncio.Future[None],
        name: str,
        end: int,
        events: Events,
        payloads: list[str],
        retired: str | None,
    ):
        self.number, self.future, self.name, self.end = number, future, name, end
        self.events, self.payloads, self.retired = events, payloads, retired


class NativeJournal:
    """Used from event loop threads (``record``) and once from any thread (``stop``)."""

    def __init__(self, journal: Journal, indexer: Indexer):
        self.journal = journal
        self.indexer = indexer
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._writer = Writer(journal.descriptor, self._wake)
        self._size = os.fstat(journal.descriptor).st_size  # as submitted, not yet flushed
        self._retired: str | None = None  # a file left behind, told with the next record
        self._waiting: deque[_Waiting] = deque()  # in record order
        self._lock = threading.Lock()  # _waiting and the writer's status, read as one
        self._loops: set[asyncio.AbstractEventLoop] = set()  # watching the eventfd
        self._stopped = False
        self.groups = 0  # flushes that answered records, records answered (for /metrics)
        self.stored = 0

    async def record(self, events: Events) -> None:
        """Return once ``events`` are in the journal and flushed; raise StoreUnavailable if
        they could not be."""
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._watch(loop)
        payloads = encode_payloads(events)  # once: the journal's and the store's text
        data = encode_record(events, payloads)
        future = loop.create_future()
        with self._lock:
            if self._size >= ROTATE_BYTES:
                self._rotate()
            try:
                number = self._writer.submit(data)
            except OSError as exc:  # a flush failed and is not answered yet: not now
                raise StoreUnavailable(f"events not journaled: {exc}") from None
            self._size += len(data)
            retired, self._retired = self._retired, None
            self._waiting.append(
                _Waiting(number, future, self.journal.name, self._size, events, payloads, retired)
            )
        await future

    def _rotate(self) -> None:
        # Creating the file flushes its directory (~0.1 ms on a busy machine), once a MiB.
        self._retired = self.journal.rotate()
        self._writer.switch(self.journal.descriptor)
        self._size = 0

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self._wake, self._woken)
        self._loops.add(loop)

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):  # another loop read it first
            os.eventfd_read(self._wake)
        self._settle()

    def _settle(self) -> None:
        """Answer the records the writer has flushed (or failed), in order."""
        done: list[_Waiting] = []
        failed: list[_Waiting] = []
        with self._lock:
            durable, last_failed, error = self._writer.status()
            limit = max(durable, last_failed) if error else durable
            waiting = self._waiting
            while waiting and waiting[0].number <= limit:
                entry = waiting.popleft()
                (done if entry.number <= durable else failed).append(entry)
            if error:
                # Take records again from the file's real end: the writer cut the tail.
                self._size = os.fstat(self.journal.descriptor).st_size
                for entry in failed:  # a file left behind is still to be told
                    if entry.retired is not None and self._retired is None:
                        self._retired = entry.retired
                self._writer.reset()
        if done:
            self.groups += 1
            self._hand_to_indexer(done)
            _answer([entry.future for entry in done], None)
        if failed:
            _answer([entry.future for entry in failed], StoreUnavailable("events not journaled"))

    def _hand_to_indexer(self, done: list[_Waiting]) -> None:
        # One item per journal file in the run (a file left behind ends the indexer's batch).
        start = 0
        for index in range(1, len(done) + 1):
            if index < len(done) and done[index].name == done[start].name:
                continue
            run = done[start:index]
            events = [event for entry in run for event in entry.events]
            payloads = [text for entry in run for text in entry.payloads]
            self.stored += len(events)
            self.indexer.submit(run[-1].name, run[-1].end, events, [], run[0].retired, payloads)
            start = index

    def stop(self) -> None:
        """Flush what was submitted, answer it, end the writer thread (from any thread)."""
        if self._stopped:
            return
        self._stopped = True
        self._writer.drain()
        self._writer.stop()
        self._settle()
        for loop in self._loops:
            with contextlib.suppress(RuntimeError):  # a closed loop watches nothing
                if _running_loop() is loop:
                    loop.remove_reader(self._wake)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, self._wake)
        self._loops.clear()
        # The eventfd stays open until the process ends if a loop may still look at it.


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _answer(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    here = _running_loop()
    elsewhere: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for future in futures:
        loop = future.get_loop()
        if loop is here:
            _settle_one(future, error)
        else:
            elsewhere.setdefault(loop, []).append(future)
    for loop, batch in elsewhere.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
            loop.call_soon_threadsafe(_settle_all, batch, error)


def _settle_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle_one(future, error)


def _settle_one(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
