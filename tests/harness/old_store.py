"""A store as the first release left it, for upgrade tests: schema 1 and rows without the
columns later migrations added (the current code can no longer write such rows itself)."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from smtpapi_milter.events import schema
from smtpapi_milter.events.sqlite_store import sqlite_path
from smtpapi_milter.events.store import event_row


def write_version_1(url: str, events: list[dict[str, Any]]) -> None:
    """Create schema 1 at ``url`` (patch schema.MIGRATIONS to its first step around the
    call) and insert ``events`` as that release would have."""
    dialect = schema.POSTGRESQL if url.startswith("postgres") else schema.SQLITE
    rows = [event_row(e)[:8] for e in events]
    insert = (
        "INSERT INTO events (event_id, type, timestamp, transmission_id, message_id,"
        " campaign_id, rcpt_to, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    if dialect == schema.SQLITE:
        with sqlite3.connect(sqlite_path(url)) as conn:
            cur = conn.cursor()
            schema.migrate(cur, dialect, lambda s: s, url)  # patched below to version 1
            cur.executemany(insert, rows)
        conn.close()
        return
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        schema.migrate(cur, dialect, lambda s: s.replace("?", "%s"), url)
        cur.executemany(insert.replace("?", "%s"), rows)
