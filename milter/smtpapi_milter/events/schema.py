"""The event store's schema, as numbered migrations for each SQL dialect.

One schema, two dialects: SQLite for one machine, PostgreSQL for shared deployments. Migration
N (1-based) is a list of statements applied in one transaction together with the row that
records it in ``schema_version``, so a store is always at exactly one known version. Never edit
a migration that has shipped: add the next one, to both dialects, and keep the lists the same
length (the store checks that a database is not newer than the code before touching it). A step
is an SQL statement, or a function of (cursor, placeholder adapter) for work SQL alone cannot do
the same way in both dialects (back-filling columns from the JSON payload).

The ``events`` columns besides ``payload`` are copies for filtering; ``payload`` holds the whole
event as JSON text (not JSONB), so queries give back exactly the dict that was recorded, key
order included, and strings JSONB refuses (``\\u0000``) still round-trip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .columns import bounce_class_column, derived_columns
from .erasure import ERASED_TABLE


class SchemaError(Exception):
    """The database was written by a newer smtpapi-milter than this one."""


SQLITE = "sqlite"
POSTGRESQL = "postgresql"

VERSION_TABLE = {
    SQLITE: "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)",
    POSTGRESQL: "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)",
}

_INDEXES = [
    "CREATE INDEX events_timestamp ON events (timestamp)",
    "CREATE INDEX events_campaign_id ON events (campaign_id)",
    "CREATE INDEX events_rcpt_to ON events (rcpt_to)",
]

Step = str | Callable[[Any, Callable[[str], str]], None]
BACKFILL_BATCH = 5000


def backfill_derived_columns(cur: Any, sql: Callable[[str], str]) -> None:
    """Fill migration 3's columns of existing rows from their payloads, in id batches."""
    last = 0
    while True:
        cur.execute(
            sql("SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?"),
            [last, BACKFILL_BATCH],
        )
        rows = cur.fetchall()
        if not rows:
            return
        last = rows[-1][0]
        updates = []
        for row_id, payload in rows:
            columns = derived_columns(json.loads(payload))
            if columns != (0, "", "", ""):  # the columns' defaults: nothing to write
                updates.append((*columns, row_id))
        if updates:
            cur.executemany(
                sql(
                    "UPDATE events SET machine = ?, target_link_url = ?, target_link_name = ?,"
                    " tags = ? WHERE id = ?"
                ),
                updates,
            )


def _engagement_columns(machine_type: str) -> list[Step]:
    """Migration 3: real columns for what the dashboard aggregates on, back-filled."""
    return [
        f"ALTER TABLE events ADD COLUMN machine {machine_type} NOT NULL DEFAULT 0",
        "ALTER TABLE events ADD COLUMN target_link_url TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN target_link_name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN tags TEXT NOT NULL DEFAULT ''",
        backfill_derived_columns,
        # Per-campaign reports (the dashboard's detail view) read one campaign's time range.
        "CREATE INDEX events_campaign_time ON events (campaign_id, timestamp)",
    ]


def _webhook_cursors(integer: str, real: str) -> str:
    # Migration 2: one row per webhook endpoint (events/webhook_cursor.py). Events up to
    # delivered_id are done; a batch in flight covers (delivered_id, batch_last] of the types
    # in batch_types, so a restart re-sends it with the same batch_id. lease_owner/lease_until
    # let one node of many deliver an endpoint.
    return (
        "CREATE TABLE webhook_cursors ("
        " endpoint TEXT PRIMARY KEY,"
        " label TEXT NOT NULL DEFAULT '',"
        f" delivered_id {integer} NOT NULL DEFAULT 0,"
        " batch_id TEXT,"
        f" batch_last {integer},"
        " batch_types TEXT,"
        f" batch_created {real},"
        " lease_owner TEXT,"
        f" lease_until {real} NOT NULL DEFAULT 0,"
        f" updated_at {real} NOT NULL DEFAULT 0)"
    )


def _token_floods(integer: str, real: str) -> list[Step]:
    # Migration 4: requests the tracker's flood guard folded, one row per token
    # (events/floods.py); abused_at is set once the token is flagged as abused.
    return [
        "CREATE TABLE token_floods ("
        " token_key TEXT PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " campaign_id TEXT NOT NULL DEFAULT '',"
        " message_id TEXT NOT NULL DEFAULT '',"
        " target_link_url TEXT NOT NULL DEFAULT '',"
        f" folded {integer} NOT NULL DEFAULT 0,"
        f" first_seen {real} NOT NULL,"
        f" last_seen {real} NOT NULL,"
        f" abused_at {real})",
        "CREATE INDEX token_floods_last_seen ON token_floods (last_seen)",
    ]


def _delivery_outcomes(integer: str, real: str) -> list[Step]:
    """Migration 6 (SPEC 13): the MTA's queue id on events, so the log follower finds the
    injections a log line is about, and the follower's place in each log it reads (committed
    with the events the lines before it produced: a restart neither skips nor repeats one).
    A file source keeps inode, offset and the bytes just before the offset (to tell a file
    truncated or replaced since); journald keeps its cursor."""
    return [
        "ALTER TABLE events ADD COLUMN mta_queue_id TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX events_mta_queue_id ON events (mta_queue_id)",
        "CREATE TABLE maillog_positions ("
        " source TEXT PRIMARY KEY,"
        f" inode {integer} NOT NULL DEFAULT 0,"
        f" file_offset {integer} NOT NULL DEFAULT 0,"
        " tail TEXT NOT NULL DEFAULT '',"
        " journal_cursor TEXT NOT NULL DEFAULT '',"
        f" updated_at {real} NOT NULL DEFAULT 0)",
    ]


def _suppressions(real: str) -> list[Step]:
    """Migration 7 (SPEC 14): the suppression list (suppression/store.py), SparkPost's shape:
    one entry per lower-cased recipient and type; listed by source and recipient."""
    return [
        "CREATE TABLE suppressions ("
        " recipient TEXT NOT NULL,"
        " type TEXT NOT NULL CHECK (type IN ('transactional', 'non_transactional')),"
        " source TEXT NOT NULL,"
        " description TEXT NOT NULL DEFAULT '',"
        f" created {real} NOT NULL,"
        f" updated {real} NOT NULL,"
        " PRIMARY KEY (recipient, type))",
        "CREATE INDEX suppressions_source ON suppressions (source, recipient)",
    ]


# Migration 8 (SPEC 13): a report mailed back to a return path names its transmission
# (bounces_in/return_path.py); bounce-in finds the injection it joins by this index.
_OUT_OF_BAND: list[Step] = ["CREATE INDEX events_transmission_id ON events (transmission_id)"]

# The kinds of event that carry a bounce class (delivery/bounce_class.py, events/model.py).
CLASSED_TYPES = ("bounce", "delay", "policy_rejection", "out_of_band")


def backfill_bounce_class(cur: Any, sql: Callable[[str], str]) -> None:
    """Fill migration 9's ``bounce_class`` of existing rows from their payloads."""
    last = 0
    kinds = ", ".join(f"'{kind}'" for kind in CLASSED_TYPES)
    while True:
        cur.execute(
            sql(
                f"SELECT id, payload FROM events WHERE id > ? AND type IN ({kinds})"
                " ORDER BY id LIMIT ?"
            ),
            [last, BACKFILL_BATCH],
        )
        rows = cur.fetchall()
        if not rows:
            return
        last = rows[-1][0]
        updates = [
            (number, row_id)
            for row_id, payload in rows
            if (number := bounce_class_column(json.loads(payload))) is not None
        ]
        if updates:
            cur.executemany(sql("UPDATE events SET bounce_class = ? WHERE id = ?"), updates)


def _bounce_class(integer: str) -> list[Step]:
    """Migration 9: the bounce class as a column, so reports count by it and not by a
    substring of the payload, where a sender's metadata could spell it too. NULL for events
    without a class. (events_campaign_id stays, though events_campaign_time starts with the
    same column: it is (campaign_id, id), which pages the API's events of one campaign in id
    order; without it each page sorts all of the campaign's events.)"""
    return [f"ALTER TABLE events ADD COLUMN bounce_class {integer}", backfill_bounce_class]


# Migration 10: how far each tracker journal is indexed (events/journal.py), written in the
# transaction that stores the journal's events. Trackers before this migration created the
# table themselves, with this same statement: IF NOT EXISTS keeps their stores working, and
# the column types are the ones they made (BIGINT: a byte offset in both dialects). As a
# migration it runs under the store's migration lock: PostgreSQL's CREATE TABLE IF NOT EXISTS
# from two sessions at once could fail one of them on the catalog's unique index.
_JOURNAL_POSITIONS: list[Step] = [
    "CREATE TABLE IF NOT EXISTS journal_positions"
    " (journal TEXT PRIMARY KEY, position BIGINT NOT NULL)"
]

# Migration 11: bounce-in looks up a transmission's injection only (bounces_in/events.py),
# yet migration 8's index took every event: each delivery outcome, open and click wrote one
# more B-tree for nothing (the log follower's batches spend most of their SQLite time in index
# writes). A partial index of injections serves the same query, which names type = 'injection'
# as the index's condition does; SQLite and PostgreSQL both use it for that.
_INJECTION_TRANSMISSIONS: list[Step] = [
    "DROP INDEX IF EXISTS events_transmission_id",
    "CREATE INDEX events_injection_transmission ON events (transmission_id)"
    " WHERE type = 'injection'",
]


def _fewer_click_indexes(dialect: str) -> list[Step]:
    """Migration 12: B-trees a click (or an open) insert wrote for no reader.

    ``mta_queue_id`` is '' for every event the tracker stores, yet migration 6's index took
    them all. Only the log follower's join reads it (maillog/join.py), for queue ids a log
    line named, and that query says ``mta_queue_id <> ''`` as this partial index's condition
    does, which is how SQLite and PostgreSQL both know the index holds every row it wants.

    PostgreSQL also drops ``events_campaign_id``: ``events_campaign_time`` starts with the
    same column and serves each lookup by campaign as well, and a PostgreSQL B-tree of
    (campaign_id) keeps a campaign's rows in no particular id order, so it never saved the
    API's per-campaign pages a sort. SQLite keeps it: its index is (campaign_id, rowid), which
    pages those events in id order without sorting all of the campaign's (see migration 9;
    without it, 2 -> 15 ms a page for a campaign of 100,000 events).
    """
    drop_campaign: list[Step] = ["DROP INDEX IF EXISTS events_campaign_id"]
    return [
        "DROP INDEX IF EXISTS events_mta_queue_id",
        "CREATE INDEX events_known_queue_id ON events (mta_queue_id) WHERE mta_queue_id <> ''",
        *(drop_campaign if dialect == POSTGRESQL else []),
    ]


MIGRATIONS: dict[str, list[list[Step]]] = {
    SQLITE: [
        [
            # AUTOINCREMENT: ids are never reused after deletes, so a stored cursor
            # (webhooks) cannot skip a new event that got an old number.
            "CREATE TABLE events ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " event_id TEXT NOT NULL UNIQUE,"
            " type TEXT NOT NULL,"
            " timestamp REAL NOT NULL,"
            " transmission_id TEXT NOT NULL DEFAULT '',"
            " message_id TEXT NOT NULL DEFAULT '',"
            " campaign_id TEXT NOT NULL DEFAULT '',"
            " rcpt_to TEXT NOT NULL DEFAULT '',"
            " payload TEXT NOT NULL)",
            *_INDEXES,
            "CREATE TABLE tags (tag TEXT PRIMARY KEY, first_seen REAL NOT NULL)",
        ],
        [_webhook_cursors("INTEGER", "REAL")],
        _engagement_columns("INTEGER"),
        _token_floods("INTEGER", "REAL"),
        [ERASED_TABLE.format(real="REAL")],  # 5: erased recipients (events/erasure.py)
        _delivery_outcomes("INTEGER", "REAL"),
        _suppressions("REAL"),
        _OUT_OF_BAND,
        _bounce_class("INTEGER"),
        _JOURNAL_POSITIONS,
        _INJECTION_TRANSMISSIONS,
        _fewer_click_indexes(SQLITE),
    ],
    POSTGRESQL: [
        [
            # An identity with the default cache of 1: ids grow across all sessions,
            # which the store's cursor horizon relies on.
            "CREATE TABLE events ("
            " id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " event_id TEXT NOT NULL UNIQUE,"
            " type TEXT NOT NULL,"
            " timestamp DOUBLE PRECISION NOT NULL,"
            " transmission_id TEXT NOT NULL DEFAULT '',"
            " message_id TEXT NOT NULL DEFAULT '',"
            " campaign_id TEXT NOT NULL DEFAULT '',"
            " rcpt_to TEXT NOT NULL DEFAULT '',"
            " payload TEXT NOT NULL)",
            *_INDEXES,
            "CREATE TABLE tags (tag TEXT PRIMARY KEY, first_seen DOUBLE PRECISION NOT NULL)",
        ],
        [_webhook_cursors("BIGINT", "DOUBLE PRECISION")],
        _engagement_columns("SMALLINT"),
        _token_floods("BIGINT", "DOUBLE PRECISION"),
        [ERASED_TABLE.format(real="DOUBLE PRECISION")],  # 5: erased recipients
        _delivery_outcomes("BIGINT", "DOUBLE PRECISION"),
        _suppressions("DOUBLE PRECISION"),
        _OUT_OF_BAND,
        _bounce_class("INTEGER"),
        _JOURNAL_POSITIONS,
        _INJECTION_TRANSMISSIONS,
        _fewer_click_indexes(POSTGRESQL),
    ],
}

LATEST = len(MIGRATIONS[SQLITE])
assert all(len(steps) == LATEST for steps in MIGRATIONS.values()), "dialects out of step"


def latest(dialect: str) -> int:
    """The version this code brings a database of ``dialect`` to."""
    return len(MIGRATIONS[dialect])


def pending(dialect: str, current: int) -> list[tuple[int, list[Step]]]:
    """The migrations a database at version ``current`` still needs, as (version, statements).

    The caller checks first that ``current`` is not newer than the code.
    """
    steps = MIGRATIONS[dialect]
    return [(number, steps[number - 1]) for number in range(current + 1, len(steps) + 1)]


def migrate(cur: Any, dialect: str, sql: Callable[[str], str], where: str) -> int:
    """Bring the database behind ``cur`` to the latest version, inside the caller's transaction.

    The caller holds whatever lock keeps other processes from migrating at the same time.
    ``sql`` adapts ``?`` placeholders to the driver; ``where`` names the store in errors.
    Returns the version; raises SchemaError, touching nothing, if the database is newer.
    """
    cur.execute(VERSION_TABLE[dialect])
    cur.execute("SELECT max(version) FROM schema_version")
    current = cur.fetchone()[0] or 0
    known = latest(dialect)
    if current > known:
        raise SchemaError(
            f"event store {where} has schema version {current}, but this smtpapi-milter only "
            f"knows versions up to {known}: upgrade smtpapi-milter (a newer release wrote this "
            "database) or point it at another store"
        )
    for version, statements in pending(dialect, current):
        for statement in statements:
            if callable(statement):
                statement(cur, sql)
            else:
                cur.execute(statement)
        cur.execute(
            sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"),
            [version, time.time()],
        )
    return known
