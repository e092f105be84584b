"""Where the follower is in each log it reads, kept in the event store's
``maillog_positions`` table (schema migration 4).

It is written in the same transaction as the events the lines before it produced, so after
a crash the store holds both or neither: a restart neither skips a line nor reads one twice.
A file's position is (inode, offset, tail); journald's is its cursor.
"""

from __future__ import annotations

import time
from typing import Any

from .file_source import FilePosition

Position = FilePosition | str  # a file's, or a journald cursor

_UPSERT = (
    "INSERT INTO maillog_positions (source, inode, file_offset, tail, journal_cursor,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
    " inode = excluded.inode, file_offset = excluded.file_offset, tail = excluded.tail,"
    " journal_cursor = excluded.journal_cursor, updated_at = excluded.updated_at"
)


def load(store: Any, source: str) -> Position | None:
    """The stored position of ``source`` (a file path or "journald"), None if none yet."""

    def work(cur: Any) -> Position | None:
        cur.execute(
            store.sql(
                "SELECT inode, file_offset, tail, journal_cursor FROM maillog_positions"
                " WHERE source = ?"
            ),
            [source],
        )
        row = cur.fetchone()
        if row is None:
            return None
        inode, offset, tail, cursor = row
        if cursor:
            return str(cursor)
        return FilePosition(int(inode), int(offset), bytes.fromhex(tail))

    return store.transaction(work, write=False)


def save(store: Any, cur: Any, source: str, position: Position) -> None:
    """Write ``position`` inside the caller's write transaction."""
    if isinstance(position, FilePosition):
        values = [position.inode, position.offset, position.tail.hex(), ""]
    else:
        values = [0, 0, "", position]
    cur.execute(store.sql(_UPSERT), [source, *values, time.time()])
