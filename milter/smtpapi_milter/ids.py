"""Transmission, message and event ids: unique across nodes, increasing, no database.

A transmission id is a 63-bit number rendered in decimal like SparkPost's: 41 bits of
milliseconds since 2020-01-01, 10 bits of node id, 12 bits of sequence. Uniqueness holds as
long as node ids differ and the clock does not go back; when it does, we refuse to guess
and the milter answers Momentum's ``421 4.3.3`` so the client retries later. Worker processes
of one node share its node id and split the sequence: worker ``i`` of ``n`` uses the sequence
values that are ``i`` modulo the next power of two of ``n``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
# A small backwards step (NTP slew) is waited out; a larger one is refused.
MAX_WAIT_MS = 50


class IdUnavailable(Exception):
    """A unique id cannot be generated now (the clock went back)."""


class IdGenerator:
    """Snowflake-style ids; thread-safe (libmilter runs one thread per connection)."""

    def __init__(
        self,
        node_id: int = 0,
        clock_ms: Callable[[], int] | None = None,
        worker: int = 0,
        workers: int = 1,
    ):
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node_id must be 0..{MAX_NODE}")
        self._worker_bits = max(workers - 1, 0).bit_length()
        if self._worker_bits > SEQUENCE_BITS - 4 or not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}: at most {1 << SEQUENCE_BITS - 4}")
        self._worker = worker
        self._max_counter = MAX_SEQUENCE >> self._worker_bits
        self._node = node_id
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = 0
        self._sequence = 0

    def next_int(self) -> int:
        with self._lock:
            now = self._clock_ms()
            if now < self._last_ms:
                if self._last_ms - now > MAX_WAIT_MS:
                    raise IdUnavailable(f"clock went back by {self._last_ms - now} ms")
                now = self._wait_until(self._last_ms)
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & self._max_counter
                if self._sequence == 0:  # the millisecond's ids are used up: take the next one
                    now = self._wait_until(self._last_ms + 1)
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                ((now - EPOCH_MS) << (NODE_BITS + SEQUENCE_BITS))
                | (self._node << SEQUENCE_BITS)
                | (self._sequence << self._worker_bits)
                | self._worker
            )

    def _wait_until(self, target_ms: int) -> int:
        deadline = time.monotonic() + MAX_WAIT_MS / 1000 * 2
        now = self._clock_ms()
        while now < target_ms:
            if time.monotonic() > deadline:
                raise IdUnavailable("clock is not advancing")
            time.sleep(0.0005)
            now = self._clock_ms()
        return now

    @property
    def node_id(self) -> int:
        return self._node

    def transmission_id(self) -> str:
        return str(self.next_int())

    def event_id(self) -> str:
        return str(self.next_int())


def message_id(transmission_id: str, index: int) -> str:
    """The id of one recipient's copy: 20 hex digits, unique within the transmission."""
    return f"{int(transmission_id):016x}{index & 0xFFFF:04x}"


def unique_event_id() -> str:
    """An event id unique without coordination: for tracker nodes, which have no node id.

    Time-ordered (milliseconds in the high bits, so ids sort roughly by time) with 80 random
    bits below: two nodes would need the same millisecond and the same 80 bits to collide.
    """
    # The random module's generator is seeded from the OS and reseeded in forked children;
    # secrets would cost a system call per id on the tracker's hot path.
    return str(((time.time_ns() // 1_000_000) << 80) | random.getrandbits(80))
