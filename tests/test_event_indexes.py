"""The ``events`` indexes: each reader's query uses the one meant for it, on both backends,
and the migration that narrowed them (12) keeps every event.

Every click the tracker stores writes each index of ``events``, so an index no query uses is
pure cost, and an index a query needs must not go unnoticed when one is dropped. The plans
are those of the statements the store really runs: each store call below goes through a
cursor that asks the database for the plan of every statement before running it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from smtpapi_milter.events import schema
from smtpapi_milter.events.stats import Scope
from smtpapi_milter.events.store import EventStore, open_store
from smtpapi_milter.maillog import join

from .test_store import T0, click, event, sql, versions
from .test_store import store_url as store_url  # the fixture: SQLite and PostgreSQL


class ExplainingCursor:
    """A store cursor that first has each query on ``events`` explained, in ``plans``."""

    def __init__(self, cur: Any, dialect: str, plans: list[str]):
        self._cur = cur
        self._dialect = dialect
        self._plans = plans
        if dialect == schema.POSTGRESQL:
            # A test table is small enough to be read whole; what counts is which index the
            # query can use.
            cur.execute("SET LOCAL enable_seqscan = off")

    def execute(self, statement: str, params: Any = ()) -> Any:
        # Statements that filter events (not "any event at all?" nor the highest id).
        if " events WHERE " in statement and statement.lstrip().startswith(("SELECT", "DELETE")):
            explain = "EXPLAIN QUERY PLAN " if self._dialect == schema.SQLITE else "EXPLAIN "
            self._cur.execute(explain + statement, params)
            column = 3 if self._dialect == schema.SQLITE else 0
            self._plans.append(" | ".join(str(row[column]) for row in self._cur.fetchall()))
        return self._cur.execute(statement, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def plans_of(store: EventStore, call: Any) -> str:
    """The plans of the queries on ``events`` that ``call()`` runs through ``store``."""
    plans: list[str] = []
    run = store._transaction

    def explained(work: Any, *, write: bool) -> Any:
        return run(lambda cur: work(ExplainingCursor(cur, store.dialect, plans)), write=write)

    store._transaction = explained
    try:
        call()
    finally:
        del store._transaction
    assert plans, "no query on events was run"
    return " || ".join(plans)


def some_events() -> list[dict[str, Any]]:
    """Injections with queue ids, their deliveries, clicks: two campaigns, many recipients."""
    made = []
    for n in range(60):
        campaign = "spring" if n % 2 else "autumn"
        rcpt = f"reader{n}@example.com"
        queue_id = f"4QX{n:04d}"
        made.append(event(n, rcpt=rcpt, campaign=campaign, mta_queue_id=queue_id))
        delivery = {"type": "delivery", "event_id": f"d-{n}"}
        made.append({**event(n, rcpt=rcpt, campaign=campaign, mta_queue_id=queue_id), **delivery})
        made.append(click(n, rcpt_to=rcpt, campaign_id=campaign))
    return made


# What each reader asks, and the index (by name, in the plan) it must use. SQLite pages one
# campaign's events in id order from events_campaign_id, (campaign_id, rowid); PostgreSQL
# finds them by events_campaign_time or reads the id order itself.
CAMPAIGN_RANGE = Scope(campaign="spring", since=T0 + 10, until=T0 + 20)
READERS: dict[str, tuple[Any, dict[str, str]]] = {
    "API events of a campaign, a page after an id": (
        lambda store: store.query_with_ids(campaign="spring", after_id=3, limit=5),
        {schema.SQLITE: "events_campaign_id (campaign_id=? AND rowid>?)"},
    ),
    "API events of a recipient": (
        lambda store: store.query(rcpt="reader3@example.com"),
        {schema.SQLITE: "events_rcpt_to", schema.POSTGRESQL: "events_rcpt_to"},
    ),
    "API events of a time range": (
        lambda store: store.query(since=T0 + 10, until=T0 + 20),
        {schema.SQLITE: "events_timestamp", schema.POSTGRESQL: "events_timestamp"},
    ),
    "dashboard campaign, a time range": (
        lambda store: store.campaign_report(CAMPAIGN_RANGE, limit=1),
        {schema.SQLITE: "events_campaign_time", schema.POSTGRESQL: "events_"},
    ),
    "dashboard campaign": (
        lambda store: store.campaign_report(Scope(campaign="spring"), limit=1),
        {schema.SQLITE: "events_campaign_time", schema.POSTGRESQL: "events_campaign_time"},
    ),
    "dashboard timeseries of a campaign": (
        lambda store: store.campaign_timeseries(Scope(campaign="spring")),
        {schema.SQLITE: "events_campaign_time", schema.POSTGRESQL: "events_campaign_time"},
    ),
    "dashboard links of a campaign": (
        lambda store: store.campaign_links(Scope(campaign="spring")),
        {schema.SQLITE: "events_campaign_time", schema.POSTGRESQL: "events_campaign_time"},
    ),
    "dashboard bounces of a campaign": (
        lambda store: store.campaign_bounces(Scope(campaign="spring")),
        {schema.SQLITE: "events_campaign_time", schema.POSTGRESQL: "events_campaign_time"},
    ),
    "dashboard campaigns of a time range": (
        lambda store: store.campaign_report(Scope(since=T0 + 10, until=T0 + 20)),
        {schema.SQLITE: "events_timestamp", schema.POSTGRESQL: "events_timestamp"},
    ),
    "log follower's join by queue id": (
        lambda store: join.lookup(store, ["4QX0003", "4QX0004"], ["4QX0004"]),
        {schema.SQLITE: "events_known_queue_id", schema.POSTGRESQL: "events_known_queue_id"},
    ),
    "erasure": (
        lambda store: store.erase_recipient("reader5@example.com"),
        {schema.SQLITE: "events_rcpt_to", schema.POSTGRESQL: "events_rcpt_to"},
    ),
    "retention": (
        lambda store: store.delete_older_than(T0 + 2),
        {schema.SQLITE: "events_timestamp", schema.POSTGRESQL: "events_timestamp"},
    ),
}


@pytest.fixture()
def filled(store_url: str) -> Any:
    store = open_store(store_url)
    store.record(some_events())
    yield store
    store.close()


@pytest.mark.parametrize("reader", READERS)
def test_each_reader_uses_its_index(filled: EventStore, reader: str) -> None:
    call, wanted = READERS[reader]
    plan = plans_of(filled, lambda: call(filled))
    if filled.dialect == schema.SQLITE:
        assert "SCAN events" not in plan.replace("SCAN events USING", ""), plan
    else:
        assert "Seq Scan on events" not in plan, plan
    if filled.dialect in wanted:
        assert wanted[filled.dialect] in plan, plan


def test_sqlite_pages_a_campaign_in_id_order_without_sorting_it(tmp_path) -> None:
    # What events_campaign_id is kept for in SQLite (migration 12 drops it in PostgreSQL):
    # without it each page of the API's events of one campaign sorts all of the campaign's
    # (a temporary B-tree), measured 2 ms -> 15 ms a page for a campaign of 100,000 events.
    url = f"sqlite://{tmp_path}/events.sqlite3"

    def page_plan() -> str:
        store = open_store(url)  # a new connection: SQLite's EXPLAIN is not re-planned
        try:
            return plans_of(store, lambda: store.query_with_ids(campaign="spring", after_id=3))
        finally:
            store.close()

    with contextlib.closing(open_store(url)) as store:
        store.record(some_events())
    assert "TEMP B-TREE" not in page_plan()
    sql(url, "DROP INDEX events_campaign_id")
    assert "TEMP B-TREE FOR ORDER BY" in page_plan()


def test_clicks_and_opens_are_not_in_the_queue_id_index(filled: EventStore) -> None:
    # Migration 12: the index of queue ids holds the events that have one, not the tracker's.
    known = sql(filled.url, "SELECT count(*) FROM events WHERE mta_queue_id <> ''")[0][0]
    assert known == 120  # the injections and deliveries of some_events()
    if filled.dialect == schema.SQLITE:
        definition = sql(
            filled.url, "SELECT sql FROM sqlite_master WHERE name = 'events_known_queue_id'"
        )
        names = [row[0] for row in sql(filled.url, "SELECT name FROM sqlite_master")]
    else:
        definition = sql(
            filled.url,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'events_known_queue_id'",
        )
        names = [row[0] for row in sql(filled.url, "SELECT indexname FROM pg_indexes")]
    assert "<>" in definition[0][0] and "''" in definition[0][0]
    assert "events_mta_queue_id" not in names
    assert ("events_campaign_id" in names) == (filled.dialect == schema.SQLITE)


def test_a_store_at_migration_11_keeps_every_event_through_migration_12(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialect = schema.POSTGRESQL if store_url.startswith("postgres") else schema.SQLITE
    events = some_events()
    with monkeypatch.context() as patch:  # the release before migration 12
        patch.setitem(schema.MIGRATIONS, dialect, schema.MIGRATIONS[dialect][:11])
        old = open_store(store_url)
        old.record(events)
        before = old.query_with_ids()
        old.close()
    assert versions(store_url) == list(range(1, 12))
    names = sql(
        store_url,
        "SELECT name FROM sqlite_master"
        if dialect == schema.SQLITE
        else "SELECT indexname FROM pg_indexes",
    )
    assert ("events_mta_queue_id",) in names and ("events_campaign_id",) in names
    store = open_store(store_url)
    try:
        assert versions(store_url) == list(range(1, schema.LATEST + 1))
        assert store.query_with_ids() == before
        assert [event for _, event in before] == events
        found = join.lookup(store, ["4QX0007"], [])
        assert [e["event_id"] for e in found.injections["4QX0007"]] == ["ev-7"]
        # New events go on after the old ones, and the follower still finds them.
        store.record([event(900, mta_queue_id="4QX0900"), click(900)])
        assert len(store.query()) == len(events) + 2
        assert join.lookup(store, ["4QX0900"], []).injections["4QX0900"][0]["event_id"] == (
            "ev-900"
        )
    finally:
        store.close()
