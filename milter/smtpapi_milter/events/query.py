"""What people and programs ask of the event store: filters given as text.

Shared by ``smtpapi-milter events`` and the HTTP events API, so both accept the same
spellings: event types by name, times as unix seconds, ISO 8601 (``2026-11-23``,
``2026-11-23T10:00:00+01:00``; no zone means UTC) or an age (``90s``, ``15m``, ``2h``, ``7d``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .model import EVENT_CLASSES

EVENT_TYPES = tuple(EVENT_CLASSES)
MAX_LIMIT = 10_000
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QueryError(ValueError):
    """A filter that cannot be understood; the message says which and why."""


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds for ``text``: a number, an ISO 8601 date or time, or an age before now."""
    text = text.strip()
    if match := _AGE.fullmatch(text):
        age = float(match.group(1)) * _UNITS[match.group(2)]
        return (time.time() if now is None else now) - age
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"cannot read time {text!r}: use unix seconds, ISO 8601 or an age like 2h or 7d"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_types(values: list[str] | None) -> list[str] | None:
    """Event types from repeated and/or comma-separated values; None means all."""
    if not values:
        return None
    types = [t.strip() for value in values for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise QueryError(f"unknown event type {unknown[0]!r}: use {', '.join(EVENT_TYPES)}")
    return types


@dataclass(frozen=True)
class EventQuery:
    """One query, as :meth:`EventStore.query_with_ids` takes it."""

    types: list[str] | None = None
    campaign: str | None = None
    rcpt: str | None = None
    since: float | None = None
    until: float | None = None
    after_id: int | None = None
    limit: int = 1000

    @classmethod
    def from_text(
        cls,
        *,
        types: list[str] | None = None,
        campaign: str | None = None,
        rcpt: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: str | None = None,
        limit: str | int | None = None,
        now: float | None = None,
    ) -> EventQuery:
        """Build a query from text filters; QueryError names the filter that is wrong."""
        try:
            count = 1000 if limit in (None, "") else int(limit)
            after_id = None if after in (None, "") else int(after)
        except ValueError:
            raise QueryError("limit and after must be whole numbers") from None
        if not 1 <= count <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        return cls(
            types=parse_types(types),
            campaign=campaign or None,
            rcpt=rcpt or None,
            since=None if not since else parse_time(since, now),
            until=None if not until else parse_time(until, now),
            after_id=after_id,
            limit=count,
        )

    def run(self, store: Any, newest: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """(id, event) pairs from ``store``, oldest first (``newest``: the last ``limit``)."""
        return store.query_with_ids(
            types=self.types,
            campaign=self.campaign,
            rcpt=self.rcpt,
            since=self.since,
            until=self.until,
            limit=self.limit,
            after_id=self.after_id,
            newest=newest,
        )
