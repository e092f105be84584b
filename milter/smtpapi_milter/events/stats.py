"""Engagement per campaign, counted in SQL: what the dashboard and its API show.

The definitions, in one place (SparkPost's where it has one):

- ``injections``: ``injection`` events (one per recipient copy the milter let through).
- ``opens``: ``open`` events (SparkPost's "rendered"; the ``initial_open`` pixel at the top of
  the same message would count one view twice). ``unique_opens``: distinct recipients with an
  ``open`` or ``initial_open`` (a client that showed only the top of a clipped message did open).
- ``clicks``: ``click`` events (a click on an unsubscribe link is one too; its extra
  ``link_unsubscribe`` event is not counted again). ``unique_clicks``: distinct recipients.
- Events a machine made (``machine`` column: prefetches such as Apple Mail Privacy Protection,
  link scanners, clicks faster than a person) count only in ``machine_opens`` and
  ``machine_clicks``, never in the numbers above. A Gmail image-proxy open is a person.
- ``open_rate`` / ``click_rate``: unique opens / clicks per injection; None without injections.
- Delivery outcomes (delivered, delayed, bounces by category, policy rejections, and the rates
  over delivered mail) and the bounce breakdown: :mod:`.delivery_stats`.

Every query here runs unchanged on SQLite and PostgreSQL but for the few spellings in
:class:`Dialect`, and orders ties by campaign id byte-wise, so both give the same pages. The
store offers them as methods through :class:`CampaignReports`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import delivery_stats as outcomes
from .columns import tag_needle, text_column

MAX_PER_PAGE = 500
MAX_BUCKETS = 1000
# Bucket widths the timeseries picks from when not told: the smallest giving <= AUTO_BUCKETS.
BUCKET_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
AUTO_BUCKETS = 120

HUMAN, MACHINE = 0, 1
T = TypeVar("T")
_COUNTS = (
    ("injections", "count(CASE WHEN type = 'injection' THEN 1 END)"),
    ("opens", f"count(CASE WHEN type = 'open' AND machine = {HUMAN} THEN 1 END)"),
    (
        "unique_opens",
        "count(DISTINCT CASE WHEN type IN ('open', 'initial_open')"
        f" AND machine = {HUMAN} THEN rcpt_to END)",
    ),
    ("clicks", f"count(CASE WHEN type = 'click' AND machine = {HUMAN} THEN 1 END)"),
    (
        "unique_clicks",
        f"count(DISTINCT CASE WHEN type = 'click' AND machine = {HUMAN} THEN rcpt_to END)",
    ),
    ("machine_opens", f"count(CASE WHEN type = 'open' AND machine = {MACHINE} THEN 1 END)"),
    ("machine_clicks", f"count(CASE WHEN type = 'click' AND machine = {MACHINE} THEN 1 END)"),
    *outcomes.COUNTS,
)
COUNT_NAMES = tuple(name for name, _ in _COUNTS)
_RATES = {"open_rate": "unique_opens", "click_rate": "unique_clicks"}
# rate -> (numerator, denominator)
RATE_PARTS = {
    **{rate: (unique, "injections") for rate, unique in _RATES.items()},
    **outcomes.RATES,
}
# sort key -> (SQL over the grouped columns, descending by default)
SORTS = {
    "recent": ("last_event", True),
    "campaign": ("campaign_id", False),
    **{name: (name, True) for name in COUNT_NAMES},
    **{
        rate: (f"CAST({part} AS DOUBLE PRECISION) / NULLIF({whole}, 0)", True)
        for rate, (part, whole) in RATE_PARTS.items()
    },
}


@dataclass(frozen=True)
class Dialect:
    """The spellings that differ: substring test, byte-wise collation, whole-bucket index."""

    contains: str  # format with haystack, needle
    binary: str
    bucket: str  # bucket number of `timestamp` for (offset, width) parameters
    position: str  # format with haystack, needle: 1-based index, 0 if absent


DIALECTS = {
    "sqlite": Dialect(
        contains="instr({}, {}) > 0",
        binary="COLLATE BINARY",
        bucket="CAST((timestamp + ?) / ? AS INTEGER)",  # timestamps are positive: truncation
        position="instr({}, {})",
    ),
    "postgresql": Dialect(
        contains="strpos({}, {}) > 0",
        binary='COLLATE "C"',  # the database's collation may sort by language rules
        bucket="CAST(floor((timestamp + ?) / ?) AS BIGINT)",
        position="strpos({}, {})",
    ),
}


@dataclass(frozen=True)
class Scope:
    """Which events a report counts: a time range [since, until) and a recipient tag."""

    since: float | None = None
    until: float | None = None
    tag: str | None = None
    campaign: str | None = None
    search: str | None = None

    def where(self, dialect: Dialect) -> tuple[str, list[Any]]:
        """The WHERE clause ('' for none) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("timestamp >= ?")
            params.append(float(self.since))
        if self.until is not None:
            clauses.append("timestamp < ?")
            params.append(float(self.until))
        if self.tag:
            clauses.append(dialect.contains.format("tags", "?"))
            params.append(tag_needle(self.tag))
        if self.campaign is not None:
            clauses.append("campaign_id = ?")
            params.append(text_column(self.campaign))
        if self.search:
            # lower() on both sides: case-insensitive (SQLite folds ASCII letters only).
            clauses.append(dialect.contains.format("lower(campaign_id)", "lower(?)"))
            params.append(text_column(self.search))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _grouped(scope: Scope, dialect: Dialect) -> tuple[str, list[Any]]:
    where, params = scope.where(dialect)
    counts = ", ".join(f"{sql} AS {name}" for name, sql in _COUNTS)
    # The bounce class is worked out once per row, and only for bounces.
    rows = (
        "SELECT campaign_id, type, machine, rcpt_to, timestamp,"
        f" {outcomes.bounce_class_sql()} AS bounce_class FROM events{where}"
    )
    sql = (
        f"SELECT campaign_id, {counts}, min(timestamp) AS first_event,"
        f" max(timestamp) AS last_event FROM ({rows}) AS e GROUP BY campaign_id"
    )
    return sql, params


def summary(row: tuple[Any, ...]) -> dict[str, Any]:
    """One campaign's numbers from a row of ``campaign_id, counts..., first, last``."""
    campaign, *counts, first, last = row
    result: dict[str, Any] = {"campaign_id": campaign}
    result.update(zip(COUNT_NAMES, (int(n) for n in counts), strict=True))
    _add_rates(result)
    result["first_event"], result["last_event"] = float(first), float(last)
    return result


def campaigns_sql(
    scope: Scope, dialect: Dialect, sort: str, descending: bool | None, offset: int, limit: int
) -> tuple[str, list[Any]]:
    """One page of campaign summaries, ordered by ``sort`` (a key of :data:`SORTS`).

    Each row ends with the totals over every matching campaign (window sums, so the events
    are aggregated once for both); :func:`split_page_row` separates the two.
    """
    grouped, params = _grouped(scope, dialect)
    expression, default_descending = SORTS[sort]
    direction = "DESC" if (default_descending if descending is None else descending) else "ASC"
    if expression == "campaign_id":
        expression = f"campaign_id {dialect.binary}"
    columns = ", ".join(("campaign_id", *COUNT_NAMES, "first_event", "last_event"))
    summed = (*COUNT_NAMES, *outcomes.TOTAL_RATES.values())
    windows = ", ".join(f"sum({name}) OVER ()" for name in summed)
    sql = (
        f"SELECT {columns}, count(*) OVER (), {windows} FROM ({grouped}) AS c"
        f" ORDER BY {expression} {direction} NULLS LAST, campaign_id {dialect.binary}"
        " LIMIT ? OFFSET ?"
    )
    return sql, [*params, int(limit), int(offset)]


def split_page_row(row: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row of :func:`campaigns_sql` as (campaign summary, totals)."""
    width = len(COUNT_NAMES) + 3
    return summary(row[:width]), totals(row[width:])


def totals_sql(scope: Scope, dialect: Dialect) -> tuple[str, list[Any]]:
    """How many campaigns match, and their counts added up (uniques per campaign); for a
    page past the end, which has no row to carry them."""
    grouped, params = _grouped(scope, dialect)
    summed = (*COUNT_NAMES, *outcomes.TOTAL_RATES.values())
    sums = ", ".join(f"coalesce(sum({name}), 0)" for name in summed)
    return f"SELECT count(*), {sums} FROM ({grouped}) AS c", params


def totals(row: tuple[Any, ...]) -> dict[str, Any]:
    """The totals object from :func:`totals_sql`'s row."""
    count, *sums = row
    counts, parts = sums[: len(COUNT_NAMES)], sums[len(COUNT_NAMES) :]
    result: dict[str, Any] = {"campaigns": int(count)}
    result.update(zip(COUNT_NAMES, (int(n) for n in counts), strict=True))
    _add_rates(result)
    delivered = result["delivered"]
    for rate, part in zip(outcomes.TOTAL_RATES, parts, strict=True):
        result[rate] = round(int(part) / delivered, 4) if delivered else None
    return result


def _add_rates(result: dict[str, Any]) -> None:
    for rate, (part, whole) in RATE_PARTS.items():
        base = result[whole]
        result[rate] = round(result[part] / base, 4) if base else None


def choose_bucket(first: float, last: float) -> int:
    """The bucket width for a span: the smallest step that keeps <= AUTO_BUCKETS buckets."""
    span = max(last - first, 1.0)
    for step in BUCKET_STEPS:
        if span / step <= AUTO_BUCKETS:
            return step
    return BUCKET_STEPS[-1]


def span_sql(scope: Scope, dialect: Dialect) -> tuple[str, list[Any]]:
    """First and last event time in scope (NULLs when there is none)."""
    where, params = scope.where(dialect)
    return f"SELECT min(timestamp), max(timestamp) FROM events{where}", params


def timeseries_sql(
    scope: Scope, dialect: Dialect, width: int, offset: int
) -> tuple[str, list[Any]]:
    """Per bucket number: injections, human and machine opens and clicks."""
    where, params = scope.where(dialect)
    names = ("injections", "opens", "clicks", "machine_opens", "machine_clicks")
    counts = ", ".join(dict(_COUNTS)[name] for name in names)
    sql = (
        f"SELECT {dialect.bucket} AS bucket, {counts} FROM events{where}"
        " GROUP BY bucket ORDER BY bucket"
    )
    return sql, [int(offset), int(width), *params]


def timeseries(
    rows: list[tuple[Any, ...]], first: float, last: float, width: int, offset: int
) -> list[dict[str, Any]]:
    """Every bucket from ``first`` to ``last`` (empty ones as zeros), oldest first."""
    start = int((first + offset) // width)
    end = int((last + offset) // width)
    if end - start + 1 > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets: choose a wider bucket")
    found = {int(row[0]): row[1:] for row in rows}
    names = ("injections", "opens", "clicks", "machine_opens", "machine_clicks")
    series = []
    for number in range(start, end + 1):
        counts = found.get(number, (0,) * len(names))
        point: dict[str, Any] = {"start": number * width - offset}
        point.update(zip(names, (int(n) for n in counts), strict=True))
        series.append(point)
    return series


def links_sql(scope: Scope, dialect: Dialect, limit: int) -> tuple[str, list[Any]]:
    """The most clicked links of the scope (people's clicks first, then machines')."""
    where, params = scope.where(dialect)
    where = (where + " AND" if where else " WHERE") + " type = 'click'"
    sql = (
        "SELECT target_link_url, target_link_name,"
        f" count(CASE WHEN machine = {HUMAN} THEN 1 END) AS clicks,"
        f" count(DISTINCT CASE WHEN machine = {HUMAN} THEN rcpt_to END) AS unique_clicks,"
        f" count(CASE WHEN machine = {MACHINE} THEN 1 END) AS machine_clicks"
        f" FROM events{where} GROUP BY target_link_url, target_link_name"
        " ORDER BY clicks DESC, unique_clicks DESC, machine_clicks DESC,"
        f" target_link_url {dialect.binary}, target_link_name {dialect.binary} LIMIT ?"
    )
    return sql, [*params, int(limit)]


def link(row: tuple[Any, ...]) -> dict[str, Any]:
    """One link's numbers from a row of :func:`links_sql`."""
    url, name, clicks, unique, machine = row
    return {
        "target_link_url": url,
        "target_link_name": name,
        "clicks": int(clicks),
        "unique_clicks": int(unique),
        "machine_clicks": int(machine),
    }


class CampaignReports:
    """The store's report queries; mixed into ``EventStore``, which supplies ``dialect``,
    ``_sql`` (placeholder adapter) and ``_transaction`` (run work with a cursor)."""

    dialect: str

    def _sql(self, text: str) -> str:
        raise NotImplementedError

    def _transaction(self, work: Callable[[Any], T], *, write: bool) -> T:
        raise NotImplementedError

    def campaign_report(
        self,
        scope: Scope,
        *,
        sort: str = "recent",
        descending: bool | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        """One page of campaigns in ``scope`` with their counts, plus totals over all pages.

        ``{"campaigns": [...], "totals": {...}, "any_events": bool}``; ``any_events`` tells
        an empty store from filters that match nothing.
        """
        dialect = DIALECTS[self.dialect]
        page_sql, page_args = campaigns_sql(scope, dialect, sort, descending, offset, limit)
        total_sql, total_args = totals_sql(scope, dialect)

        def work(cur: Any) -> dict[str, Any]:
            cur.execute(self._sql(page_sql), page_args)
            rows = [split_page_row(row) for row in cur.fetchall()]
            if rows:
                summed = rows[0][1]
            else:
                cur.execute(self._sql(total_sql), total_args)
                summed = totals(cur.fetchone())
            cur.execute("SELECT 1 FROM events LIMIT 1")
            return {
                "campaigns": [campaign for campaign, _ in rows],
                "totals": summed,
                "any_events": bool(cur.fetchall()),
            }

        return self._transaction(work, write=False)

    def campaign_timeseries(
        self, scope: Scope, *, bucket: int | None = None, tz_offset: int = 0
    ) -> dict[str, Any]:
        """Counts per time bucket over the span of the events in ``scope``.

        ``bucket`` seconds wide (None: chosen from the span), aligned to midnight at UTC
        offset ``tz_offset`` seconds. ``{"bucket": N, "series": [...]}``; ValueError when the
        span needs more than ``MAX_BUCKETS`` buckets.
        """
        dialect = DIALECTS[self.dialect]
        first_last, span_args = span_sql(scope, dialect)

        def work(cur: Any) -> dict[str, Any]:
            cur.execute(self._sql(first_last), span_args)
            first, last = cur.fetchone()
            if first is None:
                return {"bucket": bucket or BUCKET_STEPS[0], "series": []}
            width = bucket or choose_bucket(first, last)
            sql, args = timeseries_sql(scope, dialect, width, tz_offset)
            cur.execute(self._sql(sql), args)
            series = timeseries(cur.fetchall(), first, last, width, tz_offset)
            return {"bucket": width, "series": series}

        return self._transaction(work, write=False)

    def campaign_bounces(self, scope: Scope, limit: int = 20) -> dict[str, Any]:
        """Bounces in ``scope`` by class and by recipient domain (the ``limit`` with most)."""
        dialect = DIALECTS[self.dialect]
        where, params = scope.where(dialect)
        by_class = outcomes.by_class_sql(where)
        by_domain = outcomes.by_domain_sql(where, dialect.position, dialect.binary)

        def work(cur: Any) -> dict[str, Any]:
            cur.execute(self._sql(by_class), params)
            classes = [outcomes.class_row(row) for row in cur.fetchall()]
            cur.execute(self._sql(by_domain), [*params, int(limit)])
            domains = [outcomes.domain_row(row) for row in cur.fetchall()]
            return {"by_class": classes, "by_domain": domains}

        return self._transaction(work, write=False)

    def campaign_links(self, scope: Scope, limit: int = 20) -> list[dict[str, Any]]:
        """The most clicked links in ``scope``, with their names."""
        sql, args = links_sql(scope, DIALECTS[self.dialect], limit)

        def work(cur: Any) -> list[dict[str, Any]]:
            cur.execute(self._sql(sql), args)
            return [link(row) for row in cur.fetchall()]

        return self._transaction(work, write=False)
