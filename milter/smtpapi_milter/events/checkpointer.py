"""WAL checkpoints of a SQLite store on a thread and a connection of their own, for a writer
of large transactions (the log follower's batches).

SQLite checkpoints inside the commit that takes the WAL past 1,000 pages
(``wal_autocheckpoint``): the committing thread reads every new frame back from the WAL,
writes it into the database file and flushes that file before its COMMIT returns. For the
follower that was each batch's largest wait after the WAL's own flush (over
bench/maillog_bench.py's 200,000 lines: some 10,000 frames read and written again, and two
20-30 ms flushes), while the next batch's reading and parsing waited. With this, the
writer's connection does not checkpoint (``wal_autocheckpoint=0``); each write it commits
wakes this thread, whose connection runs a PASSIVE checkpoint (it never waits for, nor
blocks, writers and readers; frames a reader still uses are copied the next time).

Durability is the same: a commit is flushed to the WAL (``synchronous=FULL``) before it
returns, as before; a checkpoint only moves committed pages into the database file. The
WAL still shrinks back: SQLite starts it over at the first write after a complete
checkpoint. Erasure's TRUNCATE checkpoint (:meth:`SqliteStore.checkpoint`) holds
:attr:`BackgroundCheckpointer.lock`, so this thread never holds the checkpoint lock then.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("smtpapi_milter.events.checkpointer")


class BackgroundCheckpointer:
    """One thread checkpointing the WAL of the database ``connect()`` opens, when woken."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]):
        self.lock = threading.Lock()  # held while a checkpoint runs
        self._wanted = threading.Event()
        self._stopping = False
        self._conn = connect()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A write was committed: checkpoint (once for all the wakes since the last one)."""
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            with self.lock:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next commit tries again
                    log.warning("WAL checkpoint failed", error=str(exc))

    def close(self) -> None:
        """Stop after the checkpoint in progress, if any, and close the connection."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()
        self._conn.close()
