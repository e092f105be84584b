"""The PostgreSQL event store, shared by milter and tracker nodes (psycopg 3).

See :mod:`.store` for the contract (durable ``record``, group commit, StoreUnavailable).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from . import schema
from .store import Cursor, EventStore, StoreUnavailable, T, redact

_PG_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
# PostgreSQL advisory lock keys ("smtp" + a number), one per thing that must be serialized.
_LOCK_KEYS = {"migrate": 0x736D_7470_0001, "tags": 0x736D_7470_0002, "cursor": 0x736D_7470_0003}


class _Pool:
    """At most ``size`` PostgreSQL connections, reused; a broken one is closed, not reused.

    A connection that sat idle may have died with a server restart; work that fails on
    one is retried once on a fresh connection (everything the store does is idempotent),
    so the first call after an outage does not fail for nothing.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int, wait: float):
        self._connect = connect
        self._wait = wait
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, work: Callable[[Cursor], T], where: str) -> T:
        if not self._slots.acquire(timeout=self._wait):
            raise StoreUnavailable(f"event store {where}: no free connection for {self._wait}s")
        try:
            return self._run(work, where)
        finally:
            self._slots.release()

    def _run(self, work: Callable[[Cursor], T], where: str) -> T:
        conn, reused = self._checkout(where)
        try:
            return self._attempt(conn, work)
        except _PG_UNAVAILABLE as exc:
            if not reused:
                raise StoreUnavailable(f"event store {where}: {exc}") from exc
            self._close_idle()  # after a server restart they are all dead
        conn, _ = self._checkout(where, fresh=True)
        try:
            return self._attempt(conn, work)
        except _PG_UNAVAILABLE as exc:
            raise StoreUnavailable(f"event store {where}: {exc}") from exc

    def _attempt(self, conn: psycopg.Connection, work: Callable[[Cursor], T]) -> T:
        try:
            with conn.transaction(), conn.cursor() as cur:
                result = work(cur)
        except BaseException:
            conn.close()
            raise
        self._checkin(conn)
        return result

    def _checkout(self, where: str, fresh: bool = False) -> tuple[psycopg.Connection, bool]:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"event store {where} is closed")
            if self._idle and not fresh:
                return self._idle.pop(), True
        try:
            return self._connect(), False
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to event store {where}: {exc}") from exc

    def _checkin(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if not self._closed and conn.info.transaction_status == TransactionStatus.IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._close_idle()


class PostgresStore(EventStore):
    """PostgreSQL through a small pool; OperationalError means StoreUnavailable."""

    dialect = schema.POSTGRESQL
    placeholder = "%s"

    def __init__(self, url: str, *, connect_timeout: float = 5.0, pool_size: int = 8):
        super().__init__(url)
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"bad event store URL {redact(url)!r}: {exc}") from exc
        # Bounded waits everywhere: libpq rounds connect_timeout below 2 s up to 2, and the TCP
        # settings turn a vanished server into an error instead of a hung SMTP session.
        defaults = {
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": "smtpapi-milter",
            "keepalives": 1,
            "keepalives_idle": 15,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 15000,
        }
        self._options = {key: value for key, value in defaults.items() if key not in given}
        self._pool = _Pool(self._connect, pool_size, connect_timeout)

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=True, **self._options)
        try:
            # An acknowledged event must survive a database crash: never commit
            # asynchronously, whatever the server's default (stronger settings stay).
            if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
                conn.execute("SET synchronous_commit = on")
        except BaseException:
            conn.close()
            raise
        return conn

    def _transaction(self, work: Callable[[Cursor], T], *, write: bool) -> T:
        return self._pool.run(work, redact(self.url))

    def _lock(self, cur: Cursor, name: str, *, shared: bool = False) -> None:
        kind = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        cur.execute(f"SELECT {kind}(%s)", [_LOCK_KEYS[name]])

    def _cursor_horizon(self, cur: Cursor) -> int | None:
        # Ids are handed out before commit, so id 10 can be visible while id 9 is not yet.
        # Writers hold the "cursor" lock shared; taking it exclusively waits for those in
        # flight, and every later writer gets a higher id than the max read here.
        key = _LOCK_KEYS["cursor"]
        cur.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            cur.execute("SELECT coalesce(max(id), 0) FROM events")
            return cur.fetchone()[0]
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", [key])

    def _check_writable(self, cur: Cursor) -> None:
        super()._check_writable(cur)
        cur.execute("SELECT current_setting('transaction_read_only')")
        if cur.fetchone()[0] == "on":
            raise StoreUnavailable(f"event store {redact(self.url)} is read-only (a standby?)")

    def close(self) -> None:
        self._pool.close()
