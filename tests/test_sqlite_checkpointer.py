"""A SQLite store that prefers large writes (the log follower's) checkpoints its WAL on a
thread of its own (events/checkpointer.py), not in its commits; erasure still truncates the
WAL, and closing the store stops the thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from smtpapi_milter.events.store import open_store

LARGE_WRITES_KIB = 64 * 1024
EVENTS = 3000  # with SUBJECT, some 2,000 pages: past SQLite's automatic checkpoint (1,000)
SUBJECT = "x" * 2000


def events(first: int, count: int, rcpt: str = "reader@example.org") -> list[dict]:
    return [
        {
            "type": "injection",
            "event_id": str(first + i),
            "timestamp": "1700000000",
            "rcpt_to": rcpt,
            "subject": SUBJECT,
        }
        for i in range(count)
    ]


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_commits_leave_the_checkpoint_to_the_thread_which_makes_it(tmp_path: Path):
    db = tmp_path / "state" / "events.sqlite3"
    store = open_store(f"sqlite://{db}")
    try:
        store.prefer_large_writes(LARGE_WRITES_KIB)
        # The thread cannot checkpoint meanwhile: whatever reaches the database file now was
        # checkpointed by the commit itself, as SQLite does by default past 1,000 pages.
        with store._checkpointer.lock:
            # Measured under the lock: prefer_large_writes' own commit woke the thread, whose
            # checkpoint of the schema's pages had grown the file after an earlier reading
            # (4096 -> 110592 bytes: a CI failure of this test).
            before = db.stat().st_size
            store.record(events(0, EVENTS))
            assert db.stat().st_size == before
            assert Path(f"{db}-wal").stat().st_size > EVENTS * len(SUBJECT)
        # Let go, the thread copies the commit into the database file (probed, not slept).
        assert wait_until(lambda: db.stat().st_size > EVENTS * len(SUBJECT))
        assert len(store.query(types=["injection"])) == EVENTS
    finally:
        store.close()


def test_erasure_truncates_the_wal_of_a_store_checkpointing_on_its_thread(tmp_path: Path):
    db = tmp_path / "state" / "events.sqlite3"
    store = open_store(f"sqlite://{db}")
    try:
        store.prefer_large_writes(LARGE_WRITES_KIB)
        store.record(events(0, EVENTS // 2, "erase-me@example.org"))
        store.record(events(EVENTS, EVENTS // 2))  # wakes the thread again
        assert store.erase_recipient("erase-me@example.org") == EVENTS // 2
        assert Path(f"{db}-wal").stat().st_size == 0
        assert b"erase-me" not in db.read_bytes()
    finally:
        store.close()


def test_closing_the_store_stops_its_checkpoint_thread(tmp_path: Path):
    before = len(checkpoint_threads())
    store = open_store(f"sqlite://{tmp_path}/state/events.sqlite3")
    store.prefer_large_writes(LARGE_WRITES_KIB)
    store.prefer_large_writes(LARGE_WRITES_KIB)  # a second call starts no second thread
    assert len(checkpoint_threads()) == before + 1
    store.record(events(0, 10))
    store.close()
    assert len(checkpoint_threads()) == before
