"""The event store against both backends: a SQLite file and a real PostgreSQL server.

What matters is the contract the milter and the tracker build on: an acknowledged event is
stored (across SIGKILL and concurrent writers), a repeat is harmless, an outage is reported as
StoreUnavailable quickly instead of hanging, and the tag limit holds across processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from smtpapi_milter.events import schema
from smtpapi_milter.events.floods import FloodCount, flooded_tokens
from smtpapi_milter.events.model import injection_event
from smtpapi_milter.events.sqlite_store import sqlite_path
from smtpapi_milter.events.store import (
    EventStore,
    SchemaError,
    StoreTagRegistry,
    StoreUnavailable,
    open_store,
    redact,
)
from smtpapi_milter.events.writer_lock import WriterLock
from smtpapi_milter.settings import TagRegistry

from .harness.postgres import PostgresHarnessError, server_bin_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
T0 = 1_700_000_000


@pytest.fixture(params=[schema.SQLITE, schema.POSTGRESQL])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind: a new file, or a new database on the server."""
    if request.param == schema.SQLITE:
        return f"sqlite://{tmp_path}/state/events.sqlite3"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture()
def store(store_url: str) -> Iterator[EventStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def event(n: int, *, rcpt: str = "User@Example.com", campaign: str = "spring", **fields) -> dict:
    """An injection event numbered ``n``, ``n`` seconds after T0, plus any fields given."""
    made = injection_event(
        event_id=f"ev-{n}",
        transmission_id=f"tx-{n // 10}",
        message_id=f"msg-{n}",
        rcpt_to=rcpt,
        campaign_id=campaign,
        customer_id="42",
        tags=["news"],
        metadata={"n": n},
        msg_from="news@example.com",
        friendly_from="News <news@example.com>",
        subject="Spring sale",
        injection_time=T0 + n,
    )
    return {**made, **fields}


def click(n: int, **fields) -> dict:
    """A click event in the tracker's flat shape."""
    return {
        "type": "click",
        "event_id": f"click-{n}",
        "timestamp": str(T0 + n),
        "rcpt_to": "user@example.com",
        "campaign_id": "spring",
        "target_link_url": "https://example.com/sale",
        "user_agent_parsed": {"is_bot": False, "is_prefetched": False, "is_proxy": False},
        **fields,
    }


def run_script(code: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, text=True, **popen)


def sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on the store's database directly, as an operator would."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(sqlite_path(url)) as conn:
            rows = conn.execute(statement, params).fetchall()
        conn.close()
        return rows
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


# --- record and query ---------------------------------------------------------------------


def test_round_trip_gives_back_the_recorded_dicts(store):
    odd = click(
        1,
        subject="Grüße \u0000 \U0001f600 \ud800",  # NUL and a lone surrogate survive too
        rcpt_meta={"nested": [1, 2.5, None, True, {"k": "v"}]},
        campaign_id="c\x00\ud800",
    )
    events = [event(1), odd, event(2, rcpt=None)]
    store.record(events)
    got = store.query()
    assert got == events
    assert [list(e) for e in got] == [list(e) for e in events], "key order kept"


def test_repeated_event_id_is_ignored_and_the_first_copy_stays(store):
    first = event(1)
    store.record([first, {**first, "subject": "changed"}])
    store.record([{**first, "subject": "changed again"}])
    assert store.query() == [first]


def test_bad_events_are_refused_before_anything_is_written(store):
    for bad in ({"type": "open"}, {"event_id": "x", "timestamp": "1"}, click(1, timestamp="soon")):
        with pytest.raises(ValueError):
            store.record([event(1), bad])
    assert store.query() == []
    store.record([])


def test_filters(store):
    events = [
        event(1, rcpt="Alice@Example.com", campaign="spring"),
        click(2, rcpt_to="alice@example.com", campaign_id="spring"),
        event(3, rcpt="bob@example.com", campaign="summer"),
        click(4, rcpt_to="bob@example.com", campaign_id="summer", type="open"),
        event(5, rcpt="ALICE@example.com", campaign="summer"),
    ]
    store.record(events)

    def ids(**filters) -> list[str]:
        return [e["event_id"] for e in store.query(**filters)]

    assert ids(types=["injection"]) == ["ev-1", "ev-3", "ev-5"]
    assert ids(types=["click", "open"]) == ["click-2", "click-4"]
    assert ids(types=[]) == []
    assert ids(campaign="summer") == ["ev-3", "click-4", "ev-5"]
    assert ids(rcpt="aLiCe@EXAMPLE.com") == ["ev-1", "click-2", "ev-5"]
    assert ids(since=T0 + 2, until=T0 + 4) == ["click-2", "ev-3"], "since inclusive, until not"
    assert ids(limit=2) == ["ev-1", "click-2"]
    assert ids(limit=0) == []
    assert ids(campaign="summer", rcpt="alice@example.com", types=["injection"]) == ["ev-5"]
    assert ids(campaign="nope") == []


def test_insertion_order_and_pagination_by_id(store):
    # Timestamps out of order on purpose: results follow insertion, not time.
    numbers = [5, 3, 9, 1, 7, 2, 8]
    for n in numbers:
        store.record([event(n)])
    assert [e["event_id"] for e in store.query()] == [f"ev-{n}" for n in numbers]
    pages, cursor = [], 0
    while page := store.query_with_ids(after_id=cursor, limit=3):
        pages.append([e["event_id"] for _, e in page])
        cursor = page[-1][0]
    assert pages == [["ev-5", "ev-3", "ev-9"], ["ev-1", "ev-7", "ev-2"], ["ev-8"]]


def test_erase_recipient(store):
    store.record(
        [event(1, rcpt="Carol@Example.com"), event(2), click(3, rcpt_to="carol@example.com")]
    )
    assert store.erase_recipient("CAROL@example.COM") == 2
    assert [e["event_id"] for e in store.query()] == ["ev-2"]
    assert store.erase_recipient("carol@example.com") == 0


def test_delete_older_than(store):
    store.record([event(n) for n in range(10)])
    assert store.delete_older_than(T0 + 4) == 4
    assert [e["event_id"] for e in store.query()] == [f"ev-{n}" for n in range(4, 10)]


def test_flood_counts_add_up_with_the_events_they_ride_with(store):
    def count(key: str, n: int, at: float, abused: bool = False) -> FloodCount:
        return FloodCount(
            key, "click", "spring", "m1", "https://x.org/", n, at, at, at if abused else None
        )

    store.record([event(1)], [count("b", 3, T0 + 1), count("a", 1, T0 + 1)])
    store.record([], [count("a", 2, T0 + 5, abused=True)])
    store.record([], [count("a", 4, T0 + 3, abused=True)])  # later flag, earlier last_seen
    rows = {row["token_key"]: row for row in flooded_tokens(store)}
    assert [e["event_id"] for e in store.query()] == ["ev-1"]
    assert (rows["a"]["folded"], rows["b"]["folded"]) == (7, 3)
    assert (rows["a"]["abused_at"], rows["a"]["last_seen"]) == (T0 + 5, T0 + 5)
    assert [row["token_key"] for row in flooded_tokens(store, abused_only=True)] == ["a"]
    store.delete_older_than(T0 + 2)  # retention drops counters not folded since
    assert [row["token_key"] for row in flooded_tokens(store)] == ["a"]


# --- durability and concurrency ------------------------------------------------------------

WRITER = """
import sys
from smtpapi_milter.events.store import open_store
store = open_store(sys.argv[1])
n = 0
while True:
    store.record([{"type": "click", "event_id": f"k{n}", "timestamp": str(1700000000 + n)}])
    print(n, flush=True)
    n += 1
"""


def test_acknowledged_events_survive_sigkill(store_url):
    open_store(store_url).close()  # migrate first so the writer starts recording at once
    writer = run_script(WRITER, store_url, stdout=subprocess.PIPE)
    try:
        acked = [int(writer.stdout.readline()) for _ in range(random.randint(150, 300))]
        writer.send_signal(signal.SIGKILL)
        acked += [int(line) for line in writer.stdout.read().split()]
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    reopened = open_store(store_url)
    try:
        stored = {e["event_id"] for e in reopened.query()}
    finally:
        reopened.close()
    assert acked == list(range(len(acked)))
    assert {f"k{n}" for n in acked} <= stored


def test_many_threads_recording_single_events(store):
    threads, per_thread, errors = 8, 200, []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                store.record([click(t * 1000 + i)])
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    got = store.query_with_ids()
    assert len(got) == threads * per_thread
    assert len({e["event_id"] for _, e in got}) == threads * per_thread
    for t in range(threads):  # each thread's events in the order it recorded them
        mine = [int(e["event_id"][6:]) for _, e in got if int(e["event_id"][6:]) // 1000 == t]
        assert mine == sorted(mine)


def test_sqlite_group_larger_than_one_statement_is_stored_whole(tmp_path):
    opened = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    try:
        opened._rows_per_statement = 3  # 8 events: three INSERTs in one transaction
        opened.record([click(0)])
        opened.record([click(n) for n in range(8)])  # click-0 again: ignored, first kept
        opened.record([click(8), click(9)])  # fits one statement: no BEGIN/COMMIT
        assert [e["event_id"] for e in opened.query()] == [f"click-{n}" for n in range(10)]
    finally:
        opened.close()


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_sqlite_writer_keeps_statement_journals_in_memory_but_migrates_with_sorts_on_disk(
    tmp_path, monkeypatch
):
    # temp_store=MEMORY spares the tracker's indexer a temporary file per multi-row INSERT;
    # a migration's CREATE INDEX would sort every key of the table in memory with it.
    seen = []

    def step(cur, sql) -> None:
        seen.append(cur.execute("PRAGMA temp_store").fetchone()[0])

    monkeypatch.setitem(
        schema.MIGRATIONS, schema.SQLITE, [*schema.MIGRATIONS[schema.SQLITE], [step]]
    )
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    try:
        assert seen == [0]  # the default: files
        assert (
            store.transaction(
                lambda cur: cur.execute("PRAGMA temp_store").fetchone()[0], write=True
            )
            == 2
        )
    finally:
        store.close()


def test_sqlite_writer_lock_made_by_root_belongs_to_the_store_owner(tmp_path):
    url = f"sqlite://{tmp_path}/events.sqlite3"
    open_store(url).close()
    os.chown(sqlite_path(url), 65534, 65534)  # the service's user owns the store
    lock = Path(f"{sqlite_path(url)}.writer-lock")
    lock.unlink()
    open_store(url).close()  # an operator, as root
    assert (lock.stat().st_uid, lock.stat().st_gid) == (65534, 65534)


def test_sqlite_writers_queue_on_the_writer_lock_until_the_holder_dies(tmp_path):
    url = f"sqlite://{tmp_path}/events.sqlite3"
    opened = open_store(url)
    holder = run_script(LOCK_HOLDER, f"{sqlite_path(url)}.writer-lock", stdout=subprocess.PIPE)
    recorded = threading.Event()
    try:
        assert holder.stdout.readline() == "held\n"
        writer = threading.Thread(target=lambda: (opened.record([click(1)]), recorded.set()))
        writer.start()
        assert not recorded.wait(0.5), "wrote while another process held the writer lock"
        holder.send_signal(signal.SIGKILL)  # a dead holder's lock goes with its descriptor
        assert recorded.wait(5)
        writer.join()
        assert [e["event_id"] for e in opened.query()] == ["click-1"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        opened.close()


def test_a_fresh_sqlite_store_opened_while_another_process_converts_it_waits(tmp_path):
    # CI failure of 2026-12-04: two milter workers opened a new store on their first
    # messages; one was turning the file to WAL (SQLite's exclusive lock on a file still in
    # rollback mode) when the other asked for WAL too, got "database is locked" at once
    # (no busy wait there) and answered 451 for a second. Here a writer of ours holds the
    # writer lock and that exclusive lock: the opener must queue, then open.
    path = tmp_path / "events.sqlite3"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    converter = sqlite3.connect(path, isolation_level=None)
    lock = WriterLock(Path(f"{path}.writer-lock"))
    outcome: list[object] = []

    def open_it() -> None:
        try:
            open_store(f"sqlite://{path}").close()
            outcome.append("opened")
        except StoreUnavailable as exc:
            outcome.append(exc)

    opener = threading.Thread(target=open_it)
    try:
        with lock:
            converter.execute("BEGIN IMMEDIATE")  # as a conversion in progress holds it
            opener.start()
            opener.join(0.5)
            assert outcome == [], "the opener did not wait for the writer lock"
            converter.execute("COMMIT")
        opener.join(10)
        assert outcome == ["opened"]
    finally:
        converter.close()
        lock.close()


def test_a_cursor_following_concurrent_writers_misses_nothing(store):
    # Writers with stores of their own, as several tracker nodes are: their transactions
    # overlap, so ids may become visible out of order (PostgreSQL hands them out before commit).
    done = threading.Event()

    def write(t: int) -> None:
        node = open_store(store.url)
        try:
            for i in range(150):
                node.record([click(t * 1000 + i)])
        finally:
            node.close()

    writers = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for writer in writers:
        writer.start()

    def wait_for_writers() -> None:
        for writer in writers:
            writer.join()
        done.set()

    threading.Thread(target=wait_for_writers).start()
    seen, cursor = [], 0
    while True:
        finished = done.is_set()
        page = store.query_with_ids(after_id=cursor, limit=50)
        seen += [e["event_id"] for _, e in page]
        cursor = page[-1][0] if page else cursor
        if finished and not page:
            break
    assert len(seen) == len(set(seen)) == 600


# --- tags ------------------------------------------------------------------------------------


def test_tag_limit_and_known_tags(store):
    first = [f"t{i}" for i in range(60)]
    assert store.admit_tags(first) == first
    second = [f"t{i}" for i in range(50, 120)]  # 10 known, 60 new of which 40 fit
    assert store.admit_tags(second) == [f"t{i}" for i in range(50, 100)]
    assert store.admit_tags(["t5", "new", "t99", "t5"]) == ["t5", "t99", "t5"]
    assert len(store.tags()) == 100
    assert store.admit_tags(["a", "b", "a"], limit=1000) == ["a", "b", "a"]
    assert store.admit_tags([]) == []


ADMITTER = """
import json, os, sys, time
from smtpapi_milter.events.store import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
admitted = []
for n in range(150):
    admitted += store.admit_tags([f"{sys.argv[3]}{n}", f"shared{n}"])
store.close()
print(json.dumps(admitted))
"""


def test_concurrent_admission_from_two_processes_never_exceeds_the_limit(store, tmp_path):
    go = tmp_path / "go"
    procs = [
        run_script(ADMITTER, store.url, str(go), prefix, stdout=subprocess.PIPE)
        for prefix in ("a", "b")
    ]
    for proc in procs:  # both connected: "go" releases them together
        assert proc.stdout.readline() == "ready\n"
    go.touch()
    admitted = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        admitted |= set(json.loads(out))
    assert len(store.tags()) == 100
    assert admitted == set(store.tags())


def test_store_registry_matches_the_in_process_one(store):
    rng = random.Random(7)
    calls = [[f"t{rng.randint(0, 150)}" for _ in range(rng.randint(0, 10))] for _ in range(80)]
    local, shared = TagRegistry(limit=100), StoreTagRegistry(store, limit=100)
    with capture_logs():
        for tags in calls:
            assert shared.admit(tags) == local.admit(tags)


def test_store_registry_answers_from_its_cache(store, monkeypatch):
    asked = []
    admit_tags = store.admit_tags
    monkeypatch.setattr(
        store, "admit_tags", lambda tags, limit: asked.append(tags) or admit_tags(tags, limit)
    )
    registry = StoreTagRegistry(store, limit=3)
    assert registry.admit(["a", "b"]) == ["a", "b"]
    assert registry.admit(["b", "a", "b"]) == ["b", "a", "b"]
    assert asked == [["a", "b"]]
    other = StoreTagRegistry(store, limit=3)  # another process's view of the same store
    assert other.admit(["c"]) == ["c"]
    with capture_logs() as logs:
        assert registry.admit(["d", "a", "c"]) == ["a", "c"]
        assert registry.admit(["e", "c"]) == ["c"]  # the store is full: answered locally
    assert asked == [["a", "b"], ["c"], ["d", "c"]]
    assert [(entry["event"], entry["tag"]) for entry in logs] == [
        ("tag ignored: system-wide limit reached", "d"),
        ("tag ignored: system-wide limit reached", "e"),
    ]


# --- schema versions -------------------------------------------------------------------------


def versions(url: str) -> list[int]:
    return [row[0] for row in sql(url, "SELECT version FROM schema_version ORDER BY version")]


def test_opening_again_is_a_no_op(store_url):
    first = open_store(store_url)
    first.record([event(1)])
    second = open_store(store_url)  # while the first is still open, as milter and tracker do
    assert second.query() == [event(1)]
    first.close()
    second.close()
    assert versions(store_url) == list(range(1, schema.LATEST + 1))


def test_newer_code_upgrades_and_older_code_then_refuses(store_url, monkeypatch):
    open_store(store_url).close()
    dialect = schema.POSTGRESQL if store_url.startswith("postgres") else schema.SQLITE
    newer = [*schema.MIGRATIONS[dialect], ["CREATE INDEX events_type ON events (type)"]]
    with monkeypatch.context() as patch:
        patch.setitem(schema.MIGRATIONS, dialect, newer)
        upgraded = open_store(store_url)
        upgraded.record([event(1)])
        upgraded.close()
    assert versions(store_url) == list(range(1, schema.LATEST + 2))
    with pytest.raises(SchemaError, match=rf"schema version {schema.LATEST + 1}.*upgrade"):
        open_store(store_url)


def test_a_schema_from_the_future_is_refused(store_url):
    open_store(store_url).close()
    sql(store_url, "INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    with pytest.raises(SchemaError, match="schema version 99, but this smtpapi-milter only"):
        open_store(store_url)


# --- URLs and files --------------------------------------------------------------------------


def test_sqlite_urls_and_private_files(tmp_path):
    target = tmp_path / "new" / "dir" / "events.sqlite3"
    for url in (f"sqlite://{target}", f"sqlite:///{target}"):  # three and four slashes
        opened = open_store(url)
        opened.close()
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert target.stat().st_mode & 0o777 == 0o600
    for bad in ("sqlite://relative/events.db", "sqlite:///", "mysql://x/y", "/var/x.db"):
        with pytest.raises(ValueError):
            open_store(bad)


def test_redact_hides_passwords():
    assert redact("postgresql://u:secret@db:5432/ev") == "postgresql://u:***@db:5432/ev"
    assert redact("postgresql://u@db/ev") == "postgresql://u@db/ev"
    assert redact("postgres://u:p@[::1]/ev?password=x&sslmode=require") == (
        "postgres://u:***@[::1]/ev?password=***&sslmode=require"
    )
    assert redact("sqlite:////var/lib/x/events.sqlite3") == "sqlite:////var/lib/x/events.sqlite3"


# --- unavailable -----------------------------------------------------------------------------


def test_sqlite_that_cannot_be_opened_is_unavailable(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot open event store"):
        open_store(f"sqlite://{tmp_path}/file/events.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(StoreUnavailable):
        open_store(f"sqlite://{garbage}")


def test_sqlite_locked_by_another_process_is_unavailable_not_hung(tmp_path):
    url = f"sqlite://{tmp_path}/events.sqlite3"
    opened = open_store(url, connect_timeout=0.5)
    holder = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            opened.record([event(1)])
        assert time.monotonic() - began < 2
        holder.execute("ROLLBACK")
        opened.record([event(1)])
        opened.ping()
    finally:
        holder.close()
        opened.close()


def test_closed_store_is_unavailable(store):
    store.close()
    store.close()
    with pytest.raises(StoreUnavailable):
        store.record([event(1)])
    with pytest.raises(StoreUnavailable):
        store.query()


def test_missing_postgresql_binaries_fail_loudly(tmp_path):
    with pytest.raises(PostgresHarnessError, match="install the Debian package 'postgresql'"):
        server_bin_dir(tmp_path)


def test_postgresql_with_nothing_listening_fails_fast():
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        open_store("postgresql://127.0.0.1:1/x", connect_timeout=2)
    assert time.monotonic() - began < 3


def test_postgresql_that_never_answers_fails_within_the_connect_timeout():
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timeout"):
            open_store(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/x", connect_timeout=2)
        assert time.monotonic() - began < 3.5


def test_postgresql_outage_and_recovery(postgres_running):
    server = postgres_running
    url = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    opened = open_store(url, connect_timeout=2)
    try:
        opened.record([event(1)])
        server.stop()
        for attempt in (
            lambda: opened.record([event(2)]),
            lambda: opened.query(),
            lambda: opened.admit_tags(["x"]),
            opened.ping,
        ):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                attempt()
            assert time.monotonic() - began < 3
        server.start()
        opened.record([event(2)])  # the same object, no reopening
        opened.ping()
        # A restart between two calls: the pooled connection is dead, the call still works.
        server.stop()
        server.start()
        opened.record([event(3)])
        assert opened.query() == [event(1), event(2), event(3)]
    finally:
        opened.close()


def test_postgresql_commits_are_never_asynchronous(postgres):
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    sql(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
    opened = open_store(url)
    try:
        setting = opened._transaction(
            lambda cur: cur.execute("SHOW synchronous_commit").fetchone()[0], write=True
        )
    finally:
        opened.close()
    assert setting == "on"


def test_the_transmission_index_holds_injections_only_and_serves_bounce_in(store_url):
    # Migration 11: bounce-in's lookup (bounces_in/events.py) names type = 'injection', so
    # a partial index of injections serves it; outcomes, opens and clicks no longer write it.
    open_store(store_url).close()
    query = "SELECT payload FROM events WHERE transmission_id = ? AND type = 'injection'"
    if store_url.startswith("sqlite:"):
        plan = " ".join(str(row) for row in sql(store_url, "EXPLAIN QUERY PLAN " + query, ("t",)))
        names = [row[0] for row in sql(store_url, "SELECT name FROM sqlite_master")]
    else:
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")  # a tiny table is scanned otherwise
            plan = " ".join(
                r[0] for r in conn.execute("EXPLAIN " + query.replace("?", "%s"), ("t",))
            )
        names = [row[0] for row in sql(store_url, "SELECT indexname FROM pg_indexes")]
    assert "events_injection_transmission" in plan
    assert "events_transmission_id" not in names
