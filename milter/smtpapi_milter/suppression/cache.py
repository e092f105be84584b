"""The milter's view of the suppression list: a per-worker cache in front of the store.

Every message asks about its recipients at end of message, so the answer must cost next to
nothing on the hot path. Each worker remembers, per recipient and kind of mail, what the
store last said (suppressed, with its source, or not) for ``cache_seconds``: a newsletter
sent in one transaction per recipient, or a stream of transactional mail to the same
people, asks the store once per recipient per period. A recipient not seen within the period
costs one indexed query for all of a message's unknown recipients together.

Staleness bound: an entry added or removed takes effect in every worker within
``cache_seconds`` (default 60). The law gives two days.

A store that cannot be read raises StoreUnavailable: the milter answers 451 4.3.0 and the
client retries. Sending to a recipient who may have unsubscribed is the one failure a
sender cannot take back, and a retry loses nothing (SPEC's "never accept and forget").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..events.store import LazyStore
from .store import NON_TRANSACTIONAL, TRANSACTIONAL, list_entries, lookup

# Bounds a worker's memory (about 200 bytes an entry); past it expired entries are dropped,
# and if none are, everything (the next messages ask the store again).
MAX_ENTRIES = 200_000


class SuppressionCache:
    """Which recipients are suppressed, as far as the store said within ``seconds``."""

    def __init__(
        self,
        store: Any,  # an EventStore, or a LazyStore (opened on first use)
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ):
        self._store = store
        self._seconds = seconds
        self._clock = clock
        self._max_entries = max_entries
        # (lower-cased recipient, transactional) -> (expires, source or None if not suppressed)
        self._entries: dict[tuple[str, bool], tuple[float, str | None]] = {}
        self.queries = 0  # store lookups made, for the bench and tests

    def suppressed(self, recipients: Sequence[str], *, transactional: bool) -> dict[str, str]:
        """The suppressed ones among ``recipients`` (as given), each with its entry's source.

        Raises StoreUnavailable when the store must be asked and cannot answer.
        """
        now = self._clock()
        found: dict[str, str] = {}
        unknown: list[str] = []
        for recipient in recipients:
            cached = self._entries.get((_key(recipient), transactional))
            if cached is None or cached[0] <= now:
                unknown.append(recipient)
            elif cached[1] is not None:
                found[recipient] = cached[1]
        if unknown:
            sources = self._ask(unknown, transactional)
            expires = now + self._seconds
            if len(self._entries) + len(unknown) > self._max_entries:
                self._evict(now)
            for recipient in unknown:
                source = sources.get(recipient)
                if self._seconds > 0:
                    self._entries[(_key(recipient), transactional)] = (expires, source)
                if source is not None:
                    found[recipient] = source
        return found

    def _ask(self, recipients: list[str], transactional: bool) -> dict[str, str]:
        """The suppressed among ``recipients`` (as given) with their entries' sources."""
        store = self._store.get() if isinstance(self._store, LazyStore) else self._store
        self.queries += 1
        found = lookup(store, recipients, transactional=transactional)
        # The source only for the few found (the reply names it): one more query each.
        kind = TRANSACTIONAL if transactional else NON_TRANSACTIONAL
        sources = {}
        for recipient in found:
            entries = list_entries(store, recipient=recipient.strip(), type=kind, limit=1)
            sources[recipient] = entries[0].source if entries else ""
        return sources

    def _evict(self, now: float) -> None:
        # Rebinding (never mutating in place) keeps readers in other threads safe.
        live = {k: v for k, v in self._entries.items() if v[0] > now}
        self._entries = live if len(live) < self._max_entries // 2 else {}


def _key(recipient: str) -> str:
    return recipient.strip().lower()  # as the list keys it
