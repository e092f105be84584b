"""Where each webhook endpoint stands in the event stream, and which node delivers it.

One ``webhook_cursors`` row per endpoint (schema migration 2). Every event with an id up to
``delivered_id`` is done for that endpoint: delivered, given up, or not of a type it wants.
A batch in flight is written down *before* it is first posted — its batch id, the last event
id it covers and the event types it was built for — so whoever delivers the endpoint next
(this process after a restart, or another node) re-sends exactly that batch under the same
``X-MessageSystems-Batch-ID`` before going on. Every attempt reads the batch's events from the
store again, so one is the batch as first built less any events erased since (privacy,
retention): never an event that was not in it, so the batch id stays a true de-duplication key.

Several tracker nodes may share one PostgreSQL store; a lease in the same row lets one of
them deliver an endpoint at a time. The lease is only about liveness: every write is fenced
on ``lease_owner``, so a node that lost its lease (paused, partitioned, clock off) can no
longer move the cursor, and the worst it can still do is post the batch in flight once more
— under the same batch id, which receivers de-duplicate on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .store import EventStore


class LeaseLost(Exception):
    """Another node delivers this endpoint now; this one must drop what it holds."""


@dataclass(frozen=True)
class InFlight:
    """The batch being delivered: events after the cursor up to ``last_id`` of ``types``."""

    batch_id: str
    last_id: int
    types: tuple[str, ...] | None  # None: every type
    created: float  # when it was first written down (unix seconds)


@dataclass(frozen=True)
class CursorState:
    """What a node finds when it takes an endpoint over."""

    delivered_id: int
    batch: InFlight | None


_COLUMNS = "delivered_id, batch_id, batch_last, batch_types, batch_created"


class EndpointCursor:
    """The stored cursor and lease of one endpoint, as seen by one owner (node + process)."""

    def __init__(
        self,
        store: EventStore,
        endpoint: str,
        label: str,
        owner: str,
        *,
        lease_seconds: float,
        clock: Callable[[], float],
    ):
        self.store = store
        self.endpoint = endpoint
        self.label = label
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock

    def acquire(self, *, start_at_latest: bool) -> CursorState | None:
        """Take (or keep) the lease; the stored state if we hold it now, None if another
        live owner does. A new endpoint starts after the newest stored event
        (``start_at_latest``, as SparkPost's webhooks do) or at the very first one."""
        sql = self.store.sql

        def work(cur: Any) -> CursorState | None:
            now = self.clock()
            cur.execute(sql("SELECT 1 FROM webhook_cursors WHERE endpoint = ?"), [self.endpoint])
            if cur.fetchone() is None:
                start = 0
                if start_at_latest:
                    cur.execute("SELECT coalesce(max(id), 0) FROM events")
                    start = cur.fetchone()[0]
                cur.execute(
                    sql(
                        "INSERT INTO webhook_cursors (endpoint, label, delivered_id, updated_at)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (endpoint) DO NOTHING"
                    ),
                    [self.endpoint, self.label, start, now],
                )
            cur.execute(
                sql(
                    "UPDATE webhook_cursors SET lease_owner = ?, lease_until = ?, label = ?,"
                    " updated_at = ? WHERE endpoint = ?"
                    " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)"
                ),
                [self.owner, now + self.lease_seconds, self.label, now]
                + [self.endpoint, self.owner, now],
            )
            if cur.rowcount != 1:
                return None
            cur.execute(
                sql(f"SELECT {_COLUMNS} FROM webhook_cursors WHERE endpoint = ?"),
                [self.endpoint],
            )
            return _state(cur.fetchone())

        return self.store.transaction(work, write=True)

    def renew(self) -> None:
        """Extend the lease; LeaseLost if another owner took it."""
        self._fenced("", [], "", [])

    def release(self) -> None:
        """Give the lease up (clean shutdown) so another node takes over at once."""
        sql = self.store.sql

        def work(cur: Any) -> None:
            cur.execute(
                sql(
                    "UPDATE webhook_cursors SET lease_owner = NULL, lease_until = 0"
                    " WHERE endpoint = ? AND lease_owner = ?"
                ),
                [self.endpoint, self.owner],
            )

        self.store.transaction(work, write=True)

    def begin(self, delivered_id: int, batch: InFlight) -> None:
        """Write the batch down as in flight; it must be stored before its first POST."""
        types = None if batch.types is None else json.dumps(list(batch.types))
        self._fenced(
            "batch_id = ?, batch_last = ?, batch_types = ?, batch_created = ?",
            [batch.batch_id, batch.last_id, types, batch.created],
            " AND delivered_id = ? AND batch_id IS NULL",
            [delivered_id],
        )

    def finish(self, batch: InFlight) -> None:
        """The batch is done (delivered or given up): the cursor moves past it."""
        self._fenced(
            "delivered_id = ?, batch_id = NULL, batch_last = NULL, batch_types = NULL,"
            " batch_created = NULL",
            [batch.last_id],
            " AND batch_id = ?",
            [batch.batch_id],
        )

    def advance(self, delivered_id: int, to_id: int) -> None:
        """Move past events no batch needs (none of them of a wanted type)."""
        condition = " AND delivered_id = ? AND batch_id IS NULL"
        self._fenced("delivered_id = ?", [to_id], condition, [delivered_id])

    def _fenced(
        self, assignments: str, values: Sequence[Any], condition: str, condition_values: list
    ) -> None:
        sql = self.store.sql
        now = self.clock()
        sets = f"{assignments}, " if assignments else ""

        def work(cur: Any) -> int:
            cur.execute(
                sql(
                    f"UPDATE webhook_cursors SET {sets}lease_until = ?, updated_at = ?"
                    f" WHERE endpoint = ? AND lease_owner = ?{condition}"
                ),
                [*values, now + self.lease_seconds, now, self.endpoint, self.owner]
                + condition_values,
            )
            return cur.rowcount

        if self.store.transaction(work, write=True) != 1:
            raise LeaseLost(f"webhook endpoint {self.label}: lease or cursor changed under us")


def _state(row: Sequence[Any]) -> CursorState:
    delivered_id, batch_id, last_id, types, created = row
    batch = None
    if batch_id is not None:
        batch = InFlight(
            batch_id=batch_id,
            last_id=int(last_id),
            types=None if types is None else tuple(json.loads(types)),
            created=float(created),
        )
    return CursorState(delivered_id=int(delivered_id), batch=batch)


def read_cursor(store: EventStore, endpoint: str) -> dict[str, Any] | None:
    """The stored row of ``endpoint`` as a dict (for operators and tests), or None."""
    columns = f"{_COLUMNS}, label, lease_owner, lease_until, updated_at"

    def work(cur: Any) -> dict[str, Any] | None:
        cur.execute(
            store.sql(f"SELECT {columns} FROM webhook_cursors WHERE endpoint = ?"), [endpoint]
        )
        row = cur.fetchone()
        return None if row is None else dict(zip(columns.split(", "), row, strict=True))

    return store.transaction(work, write=False)
