"""The ``token_floods`` table: tracked requests that were answered but not stored as events.

The tracker's flood guard (``tracker/flood.py``) folds repeats of a token into a counter
instead of storing each as an event row. One row per token: how many requests were folded,
when the first and last were seen, and since when the token is flagged as abused. The row
names the token by a digest and holds no recipient address; its campaign, message id and
target link say which mail and link it is (the token's stored events carry the recipient).

Counters are added in the same transaction as the events of a group commit, with an upsert,
so several tracker workers and nodes add to one row without reading it first. Rows are
written in key order, so two nodes' transactions never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .columns import text_column

COLUMNS = (
    "token_key",
    "kind",
    "campaign_id",
    "message_id",
    "target_link_url",
    "folded",
    "first_seen",
    "last_seen",
    "abused_at",
)
_UPSERT = (
    f"INSERT INTO token_floods ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    " ON CONFLICT (token_key) DO UPDATE SET folded = token_floods.folded + excluded.folded,"
    " last_seen = CASE WHEN excluded.last_seen > token_floods.last_seen"
    " THEN excluded.last_seen ELSE token_floods.last_seen END,"
    " abused_at = COALESCE(token_floods.abused_at, excluded.abused_at)"
)


@dataclass
class FloodCount:
    """Folded requests of one token, not yet written (merged in memory until the commit)."""

    token_key: str
    kind: str
    campaign_id: str
    message_id: str
    target_link_url: str
    folded: int
    first_seen: float
    last_seen: float
    abused_at: float | None = None

    @classmethod
    def of_request(cls, key: str, data: Any, now: float, abused: bool) -> FloodCount:
        """One folded request for the token ``data`` (a TrackingData) names."""
        return cls(
            key,
            data.kind,
            text_column(data.campaign_id),
            text_column(data.message_id),
            text_column(data.target_url),
            1,
            now,
            now,
            now if abused else None,
        )

    def merge(self, other: FloodCount) -> None:
        """Add ``other`` (the same token) to this count."""
        self.folded += other.folded
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        if self.abused_at is None:
            self.abused_at = other.abused_at

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, column) for column in COLUMNS)


def add_counts(cur: Any, sql: Callable[[str], str], counts: Sequence[FloodCount]) -> None:
    """Add ``counts`` to their tokens' rows, inside the caller's transaction."""
    rows = [count.row() for count in sorted(counts, key=lambda count: count.token_key)]
    if rows:
        cur.executemany(sql(_UPSERT), rows)


def prune(cur: Any, sql: Callable[[str], str], cutoff: float) -> int:
    """Drop the rows of tokens not folded since ``cutoff`` (retention); returns how many."""
    cur.execute(sql("DELETE FROM token_floods WHERE last_seen < ?"), [float(cutoff)])
    return cur.rowcount


def flooded_tokens(
    store: Any, *, abused_only: bool = False, campaign: str | None = None, limit: int = 100
) -> list[dict]:
    """The tokens with the most folded requests first, as dicts of the table's columns;
    only those flagged as abused, or of one campaign, if asked."""

    def work(cur: Any) -> list[dict]:
        clauses, args = [], []
        if abused_only:
            clauses.append("abused_at IS NOT NULL")
        if campaign is not None:
            clauses.append("campaign_id = ?")
            args.append(text_column(campaign))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        cur.execute(
            store.sql(
                f"SELECT {', '.join(COLUMNS)} FROM token_floods{where}"
                " ORDER BY folded DESC, token_key LIMIT ?"
            ),
            [*args, int(limit)],
        )
        return [dict(zip(COLUMNS, row, strict=True)) for row in cur.fetchall()]

    return store.transaction(work, write=False)
