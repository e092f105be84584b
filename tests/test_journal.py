"""The tracker's event journal (events/journal.py): durable on append, indexed off the hot path.

What must hold: an appended record is in the store after indexing, exactly once; a journal
left by a worker that died (SIGKILL) is replayed from the position stored with the events
already indexed, neither losing nor repeating one; a torn tail (never acknowledged) is not
replayed; erased recipients are not stored from the journal either; a live worker's journal
is never taken by another.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.config import load_config
from smtpapi_milter.events import journal as journal_module
from smtpapi_milter.events import journal_indexer, payload, schema
from smtpapi_milter.events.floods import FloodCount
from smtpapi_milter.events.journal import Journal, backlog, encode_record, read_records
from smtpapi_milter.events.journal_indexer import IndexerStatus, JournalIndexer
from smtpapi_milter.events.store import LazyStore, StoreUnavailable, event_row, open_store
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker import recorder as recorder_module
from smtpapi_milter.tracker.recorder import EventRecorder

from .harness.smtpapi import ROOT, RunningTracker
from .test_event_payload import VALUES
from .test_store import click, sql, versions
from .test_store import store_url as store_url  # the fixture: SQLite and PostgreSQL
from .test_tracker_faults import ClickLoad, stored_transmissions


def opened(tmp_path: Path):
    return open_store(f"sqlite:///{tmp_path / 'events.sqlite3'}")  # journal_positions: migration 10


def stored_ids(store) -> list[str]:
    return sorted(event["event_id"] for event in store.query())


def test_records_round_trip_and_a_torn_tail_is_not_read(tmp_path):
    path = tmp_path / "x.journal"
    first, second = encode_record([click(1)]), encode_record([click(2), click(3)])
    path.write_bytes(first + second + second[:-5])  # the last append never finished
    records = list(read_records(path, 0))
    assert [record.end for record in records] == [len(first), len(first) + len(second)]
    assert [e["event_id"] for record in records for e in record.events] == [
        "click-1",
        "click-2",
        "click-3",
    ]
    assert list(read_records(path, len(first)))[0].events == [click(2), click(3)]
    # A flipped byte fails the checksum: indexing stops before it.
    damaged = bytearray(first + second)
    damaged[len(first) + 20] ^= 1
    path.write_bytes(bytes(damaged))
    assert [record.end for record in read_records(path, 0)] == [len(first)]


def test_folded_counts_round_trip_as_a_record_of_their_own(tmp_path):
    count = FloodCount("k", "click", "c\udcff", "m", "https://x.example/é", 3, 1.5, 2.5, None)
    path = tmp_path / "x.journal"
    path.write_bytes(encode_record([click(1)]) + journal_module.encode_folds([count]))
    assert [(r.events, r.folds) for r in read_records(path, 0)] == [
        ([click(1)], []),
        ([], [count]),
    ]


def indexer_of(store, directory: Path, **options) -> JournalIndexer:
    return JournalIndexer(directory, store, **options)


def indexed_within(seconds: float, directory: Path, store) -> None:
    """Until every journal of ``directory`` is in ``store``; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while backlog(directory, store):
        assert time.monotonic() < deadline, f"not indexed within {seconds} s"
        time.sleep(0.005)


def test_appended_events_are_indexed_once_with_their_position(tmp_path):
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory)
    try:
        name, end = journal.append([[click(1), click(2)]])
        path = tmp_path / "journal" / name
        # Written over the zeros the file was made of (journal.py): they end the records.
        assert path.stat().st_size == journal_module.ROTATE_BYTES > end
        assert journal_module.written_end(path) == end
        assert path.read_bytes()[end:] == bytes(journal_module.ROTATE_BYTES - end)
        assert backlog(journal.directory, store) == end
        assert indexer.index_once() == 2
        assert indexer.index_once() == 0  # nothing new: nothing stored twice
        assert stored_ids(store) == ["click-1", "click-2"]
        assert backlog(journal.directory, store) == 0
        assert (tmp_path / "journal" / name).exists()  # its worker still writes it
    finally:
        journal.close()
        store.close()


def test_the_first_click_after_a_pause_is_in_the_store_at_once(tmp_path):
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory).start()
    try:
        for n in range(3):
            time.sleep(journal_indexer.INDEX_INTERVAL * 2)  # idle
            journal.append([[click(n)]])
            indexed_within(0.5, journal.directory, store)
        assert stored_ids(store) == ["click-0", "click-1", "click-2"]
    finally:
        journal.close()
        indexer.stop()
        store.close()


def test_an_indexer_behind_does_not_rest_between_full_batches(tmp_path):
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory, max_events=1, interval=30).start()
    try:
        journal.append([[click(1)], [click(2)], [click(3)]])
        indexed_within(5, journal.directory, store)  # not 30 s: no rest between full batches
        assert stored_ids(store) == ["click-1", "click-2", "click-3"]
    finally:
        journal.close()
        indexer.stop()
        store.close()


def test_events_of_several_journals_are_stored_in_the_order_they_were_answered(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    first, second = Journal(directory), Journal(directory)
    now = time.time_ns() // 1_000_000
    # Increasing milliseconds, as the workers' clicks get them (ids.unique_event_id).
    ids = [str((now + n) << 80 | 99 - n) for n in range(4)]
    try:
        second.append([[{**click(0), "event_id": ids[0]}]])
        first.append([[{**click(1), "event_id": ids[1]}]])
        second.append([[{**click(2), "event_id": ids[2]}]])
        first.append([[{**click(3), "event_id": ids[3]}]])
        indexer_of(store, directory).index_once()
        assert [event["event_id"] for event in store.query()] == ids
    finally:
        first.close()
        second.close()
        store.close()


def test_a_full_journal_is_left_behind_and_deleted_once_indexed(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 1)
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory)
    try:
        first, _ = journal.append([[click(1)]])
        second, _ = journal.append([[click(2)]])
        assert second != first
        spare = journal.spare_name()  # the next one, made ready (journal.py)
        indexer.index_once()  # both indexed; the first let go of, so deleted in the next pass
        indexer.index_once()
        assert sorted(p.name for p in journal.directory.glob("*.journal")) == [second, spare]
        assert stored_ids(store) == ["click-1", "click-2"]
        assert positions(store) == [(second, (journal.directory / second).stat().st_size)]
    finally:
        journal.close()
        store.close()


def test_the_next_journal_is_made_ready_before_it_is_needed(tmp_path, monkeypatch):
    """Past half of ROTATE_BYTES a thread makes the next file (held, named, all zeros), so
    the append that rotates makes none; on close both are let go of and the indexer deletes
    them."""
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 4096)
    monkeypatch.setattr(journal_module, "ZERO_PIECE", 1000)  # pieces not dividing the size
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory)
    made = []
    real_create = journal_module._create
    monkeypatch.setattr(journal_module, "_create", lambda d: made.append(1) or real_create(d))
    try:
        first, _ = journal.append([[click(1)]])
        assert journal.spare_name() is None  # not half full yet
        n = 1
        while journal.name == first and journal._size < 2048:
            n += 1
            journal.append([[click(n)]])
        spare = journal.spare_name()
        assert spare is not None and made == [1]
        path = journal.directory / spare
        assert path.read_bytes() == bytes(4096)
        with open(path, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: the indexer leaves it
        while journal.name == first:
            n += 1
            journal.append([[click(n)]])
        assert journal.name == spare and made == [1]  # the rotation made no file itself
        indexer.index_once()
        assert backlog(journal.directory, store) == 0
    finally:
        journal.close()
    indexer.index_once()
    indexer.index_once()
    assert list(journal.directory.glob("*.journal")) == []
    assert stored_ids(store) == sorted(f"click-{i}" for i in range(1, n + 1))
    store.close()


def positions(store) -> list[tuple[str, int]]:
    return store.transaction(
        lambda cur: [tuple(row) for row in cur.execute("SELECT * FROM journal_positions")],
        write=False,
    )


def test_a_journal_of_appended_records_only_is_indexed_too(tmp_path):
    """A journal not made of zeros first (what releases before this one wrote) ends at its
    size."""
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "1-1.journal").write_bytes(encode_record([click(1)]) + encode_record([click(2)]))
    try:
        indexer = indexer_of(store, directory)
        indexer.index_once()
        indexer.index_once()
        assert stored_ids(store) == ["click-1", "click-2"]
        assert not (directory / "1-1.journal").exists()
    finally:
        store.close()


def test_a_journal_write_that_failed_is_not_read(tmp_path, monkeypatch):
    journal = Journal(tmp_path / "journal")
    try:
        name, end = journal.append([[click(1)]])
        real = os.pwrite
        calls = []

        def torn(fd, data, offset):  # half of the record reaches the file, then EIO
            calls.append(offset)
            if len(calls) == 1:
                real(fd, bytes(data)[: len(data) // 2], offset)
                raise OSError(5, "Input/output error")
            return real(fd, data, offset)

        monkeypatch.setattr(journal_module.os, "pwrite", torn)
        with pytest.raises(OSError):
            journal.append([[click(2)]])
        monkeypatch.setattr(journal_module.os, "pwrite", real)
        path = tmp_path / "journal" / name
        assert journal_module.written_end(path) == end  # zeros over the torn part
        _, end = journal.append([[click(3)]])
        assert [e["event_id"] for r in read_records(path, 0) for e in r.events] == [
            "click-1",
            "click-3",
        ]
    finally:
        journal.close()


def dead_workers_journal(directory: Path, groups: list[list[dict]]) -> tuple[str, list[int]]:
    """A journal written by a process that then died before indexing any of it."""
    journal = Journal(directory)
    ends = [journal.append([group])[1] for group in groups]
    name = journal.name
    journal.close()  # the lock goes with the process
    return name, ends


def test_a_dead_workers_journal_is_indexed_from_its_stored_position(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    name, ends = dead_workers_journal(directory, [[click(1)], [click(2)], [click(3), click(4)]])
    # It died after indexing its first record (the position was committed with it)...
    store.transaction(
        lambda cur: cur.execute(
            "INSERT INTO journal_positions (journal, position) VALUES (?, ?)", [name, ends[0]]
        ),
        write=True,
    )
    store.record([click(1)])
    # ...and its next record's event had reached the store too but not the position (the
    # transaction was cut short): the event id keeps it once.
    store.record([click(2)])
    indexer = indexer_of(store, directory).start()  # indexed before start returns
    try:
        assert stored_ids(store) == ["click-1", "click-2", "click-3", "click-4"]
        assert not (directory / name).exists()
        assert positions(store) == []
    finally:
        indexer.stop()
        store.close()


def test_a_torn_tail_of_a_dead_workers_journal_is_dropped_with_it(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    name, _ = dead_workers_journal(directory, [[click(1)]])
    with (directory / name).open("ab") as torn:
        torn.write(encode_record([click(2)])[:-3])  # never acknowledged
    indexer = indexer_of(store, directory)
    indexer.index_once()  # its record
    indexer.index_once()  # nobody holds it, nothing intact is left: deleted
    try:
        assert stored_ids(store) == ["click-1"]
        assert not (directory / name).exists()
    finally:
        store.close()


def test_an_indexer_whose_store_is_down_says_so_to_the_workers(tmp_path):
    """With nothing to index, start must still ask the store: the workers answer 503 (never
    an unrecorded redirect) until the indexer says it is up."""
    store = LazyStore("postgresql://127.0.0.1:1/events")  # nothing listens on port 1
    directory = tmp_path / "journal"
    indexer = indexer_of(store, directory).start()
    try:
        assert not indexer.healthy
        assert not IndexerStatus(directory).up()
    finally:
        indexer.stop()


def test_a_worker_answers_only_while_the_indexer_says_up_recently(tmp_path):
    directory = tmp_path / "journal"
    directory.mkdir()
    status = directory / journal_indexer.STATUS_NAME
    now = time.monotonic_ns()
    for text, up in (
        (f"up {now}", True),
        (f"down {now}", False),
        (f"up {now - int(journal_indexer.STALE_SECONDS * 1e9) - 1}", False),  # no indexer
        (f"up {now + 10**12}", False),  # written before a reboot
        ("garbage", False),
    ):
        status.write_text(text)
        assert IndexerStatus(directory).up() == up, text
    status.unlink()
    assert not IndexerStatus(directory).up()
    # The recorder refuses clicks meanwhile: 503, not an answer whose event waits forever.
    store = opened(tmp_path)
    recorder = EventRecorder(store, journal=Journal(directory)).start()
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(recorder.record([click(1)]))
        indexer = indexer_of(store, directory).start()
        # At once: a "not up" is not kept (regression: a worker that read it before the
        # indexer started refused clicks for a while after the indexer said up).
        asyncio.run(recorder.record([click(2)]))
        recorder.stop()
        indexer.stop()  # indexes what is journaled
        assert stored_ids(store) == ["click-2"]
    finally:
        recorder.stop()
        store.close()


def test_an_indexer_too_far_behind_tells_the_workers_to_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_indexer, "REFUSE_BYTES", 1)
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    indexer = indexer_of(store, journal.directory, max_events=1)
    try:
        journal.append([[click(1)], [click(2)], [click(3)]])
        assert indexer._step() == 1  # one event a pass: the rest is behind
        assert not IndexerStatus(journal.directory).up()
        while indexer._step():
            pass
        assert IndexerStatus(journal.directory).up()
    finally:
        journal.close()
        store.close()


def test_one_indexer_works_a_directory_and_another_waits(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    journal = Journal(directory)
    first = indexer_of(store, directory, stop_seconds=0).start()
    standby = indexer_of(store, directory).start()
    try:
        journal.append([[click(1)]])
        indexed_within(5, directory, store)
        assert (first.indexed, standby.indexed) == (1, 0)
        first.stop()
        journal.append([[click(2)]])  # the stand-by takes over (it retries every second)
        indexed_within(5, directory, store)
        assert standby.indexed == 1
        assert stored_ids(store) == ["click-1", "click-2"]
    finally:
        journal.close()
        standby.stop()
        first.stop()
        store.close()


def test_a_journal_never_named_is_swept_once_old(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    directory.mkdir()
    old, new = directory / "1-2.journal.new", directory / "3-4.journal.new"
    old.write_bytes(b"")
    new.write_bytes(b"")
    past = time.time() - journal_indexer.ABANDONED_SECONDS - 1
    os.utime(old, (past, past))
    try:
        indexer_of(store, directory).index_once()
        assert not old.exists() and new.exists()
    finally:
        store.close()


def test_the_idle_class_is_left_when_far_behind_and_taken_again_once_caught_up():
    seen = []

    def run() -> None:  # in a thread of its own: the policy is per thread
        scheduling = journal_indexer.IdleScheduling()
        scheduling.enter()
        seen.append(os.sched_getscheduler(0))
        scheduling.follow(journal_indexer.CATCH_UP_BYTES // 2)
        seen.append(os.sched_getscheduler(0))
        scheduling.follow(journal_indexer.CATCH_UP_BYTES + 1)
        seen.append(os.sched_getscheduler(0))
        scheduling.follow(0)
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    idle, other = os.SCHED_IDLE, os.SCHED_OTHER
    if os.geteuid() == 0:  # leaving the idle class takes root, CAP_SYS_NICE or LimitNICE
        assert seen == [idle, idle, other, idle]
    else:
        assert seen[:2] == [idle, idle]


# What trackers ran themselves before migration 10 took the table over (events/schema.py).
TRACKER_MADE_POSITIONS = (
    "CREATE TABLE IF NOT EXISTS journal_positions"
    " (journal TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)


@pytest.mark.parametrize("tracker_made_the_table", [False, True], ids=["without", "with"])
def test_a_store_at_migration_9_gets_journal_positions_from_migration_10(
    store_url, tmp_path, monkeypatch, tracker_made_the_table
):
    dialect = schema.POSTGRESQL if store_url.startswith("postgres") else schema.SQLITE
    directory = tmp_path / "journal"
    name, ends = dead_workers_journal(directory, [[click(1)], [click(2)]])
    with monkeypatch.context() as patch:  # the release before migration 10
        patch.setitem(schema.MIGRATIONS, dialect, schema.MIGRATIONS[dialect][:9])
        open_store(store_url).close()
    if tracker_made_the_table:  # and its tracker, which had indexed the journal's first record
        sql(store_url, TRACKER_MADE_POSITIONS)
        sql(store_url, "INSERT INTO journal_positions VALUES (?, ?)", (name, ends[0]))
    assert versions(store_url) == list(range(1, 10))
    store = open_store(store_url)
    # Part of the schema once the store is open, before any tracker: migration 10.
    assert versions(store_url) == list(range(1, schema.LATEST + 1))
    positions = sql(store_url, "SELECT journal, position FROM journal_positions")
    assert positions == ([(name, ends[0])] if tracker_made_the_table else [])
    indexer = indexer_of(store, directory).start()  # indexes the dead worker's journal
    try:
        # The position a tracker stored before the upgrade still counts: nothing is repeated.
        replayed = ["click-2"] if tracker_made_the_table else ["click-1", "click-2"]
        assert stored_ids(store) == replayed
        assert not (directory / name).exists()
    finally:
        indexer.stop()
        store.close()


def test_replay_does_not_store_erased_recipients(tmp_path):
    store = opened(tmp_path)
    directory = tmp_path / "journal"
    dead_workers_journal(
        directory, [[click(1, rcpt_to="gone@example.com"), click(2, rcpt_to="kept@example.com")]]
    )
    store.erase_recipient("gone@example.com")
    try:
        indexer_of(store, directory).index_once()
        assert stored_ids(store) == ["click-2"]
    finally:
        store.close()


def test_a_locked_journal_file_is_held_by_its_worker(tmp_path):
    journal = Journal(tmp_path / "journal")
    try:
        fd = os.open(tmp_path / "journal" / journal.name, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("another process could take a live journal")
            except BlockingIOError:
                pass
        finally:
            os.close(fd)
    finally:
        journal.close()


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def worker_pids(tracker: RunningTracker) -> list[int]:
    """The public listener's Granian workers (the children of that listener's process)."""
    assert tracker.process is not None
    for listener in children(tracker.process.pid):
        arguments = Path(f"/proc/{listener}/cmdline").read_bytes().split(b"\0")
        if b"public" in arguments:
            return children(listener)
    return []


def test_the_tracker_indexes_in_a_process_of_its_own_in_the_idle_class(tmp_path):
    with RunningTracker(tmp_path) as tracker:
        assert tracker.process is not None
        indexers = [
            pid
            for pid in children(tracker.process.pid)
            if b"indexer" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        ]
        assert len(indexers) == 1
        assert os.sched_getscheduler(indexers[0]) == os.SCHED_IDLE
        threads = [
            {(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()}
            for pid in worker_pids(tracker)
        ]
        # The worker that answered /healthz writes its journal; none indexes beside its answers.
        assert any("event-writer" in names for names in threads)
        assert not any("journal-indexer" in names for names in threads)


def test_sigkill_of_a_worker_loses_and_repeats_no_answered_click(tmp_path):
    # Through the real tracker: a worker killed under load leaves its journal; the worker
    # Granian starts in its place replays it. Every redirected click stored, exactly once.
    tracker = RunningTracker(tmp_path)
    with tracker:
        codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
        with ClickLoad(tracker, codec) as load:
            load.wait_for(300)
            victims = worker_pids(tracker)
            assert victims, "no Granian worker found"
            os.kill(victims[0], signal.SIGKILL)
            before = len(load.redirected)
            load.wait_for(before + 300)
        tracker.wait_indexed(timeout=60)
        store = open_store(load_config(str(tracker.config_path)).event_store_url)
        try:
            transmissions = [e["transmission_id"] for e in store.query(types=["click"])]
        finally:
            store.close()
    assert not load.redirected - set(transmissions), "redirected clicks not stored"
    assert len(transmissions) == len(set(transmissions)), "a click stored twice"


def test_the_tracker_answers_before_indexing(tmp_path):
    # The store's writer lock is held by another process: clicks are still answered at once
    # (journaled), and stored as soon as the lock is let go.
    tracker = RunningTracker(tmp_path)
    with tracker:
        codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
        db = tmp_path / "state" / "events.sqlite3"
        with subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
                " c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(3)",
                str(db),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        ) as holder:
            assert holder.stdout.readline().strip() == "held"
            with ClickLoad(tracker, codec) as load:
                started = time.monotonic()
                load.wait_for(20, timeout=2.5)
                assert time.monotonic() - started < 2.5
        tracker.wait_indexed()
        assert load.redirected <= stored_transmissions(tracker)


def say_up(directory: Path) -> None:
    """The indexer's word that the store takes clicks (the recorder refuses them without)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / journal_indexer.STATUS_NAME).write_text(f"up {time.monotonic_ns()}\n")


def journaled_ids(directory: Path, name: str) -> list[list[str]]:
    return [[e["event_id"] for e in r.events] for r in read_records(directory / name, 0)]


@pytest.fixture
def journaling(tmp_path):
    """A recorder with a journal, the indexer's word given: (recorder, journal directory)."""
    directory = tmp_path / "journal"
    say_up(directory)
    store = opened(tmp_path)
    recorder = EventRecorder(store, journal=Journal(directory)).start()
    yield recorder, directory
    recorder.stop()
    store.close()


def test_a_loop_appends_its_requests_to_the_journal_itself_one_group_an_iteration(tmp_path):
    # The event loop flushes the journal (recorder.py): the requests it handled before the
    # flush ran share one append, made in the loop's own thread, not the writer thread's.
    directory = tmp_path / "journal"
    say_up(directory)
    store, journal = opened(tmp_path), Journal(directory)
    appended_in: list[int] = []
    append = journal.append

    def append_here(*args, **kwargs):
        appended_in.append(threading.get_ident())
        return append(*args, **kwargs)

    journal.append = append_here
    recorder = EventRecorder(store, journal=journal).start()

    async def clicks() -> int:
        await asyncio.gather(*(recorder.record([click(n)]) for n in range(200)))
        await recorder.record([click(200)])  # alone: its own iteration, its own flush
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(clicks())
        assert appended_in == [loop_thread, loop_thread]
        groups = journaled_ids(directory, journal.name)
        assert groups == [[f"click-{n}" for n in range(200)], ["click-200"]]
        assert (recorder.groups, recorder.stored) == (2, 201)
    finally:
        recorder.stop()
        store.close()


def test_a_failed_journal_flush_answers_each_request_of_its_group_unavailable(
    journaling, monkeypatch
):
    recorder, directory = journaling
    real = os.pwrite

    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    async def clicks(first: int) -> list:
        requests = (recorder.record([click(n)]) for n in range(first, first + 5))
        return await asyncio.gather(*requests, return_exceptions=True)

    monkeypatch.setattr(journal_module.os, "pwrite", full)
    answers = asyncio.run(clicks(0))
    assert [type(answer) for answer in answers] == [StoreUnavailable] * 5
    monkeypatch.setattr(journal_module.os, "pwrite", real)
    assert asyncio.run(clicks(5)) == [None] * 5  # the next group is journaled
    assert journaled_ids(directory, recorder.journal.name) == [[f"click-{n}" for n in range(5, 10)]]


def test_a_group_that_cannot_be_journaled_is_answered_unavailable_not_left_waiting(journaling):
    # A flush runs as a callback of the loop: an error other than the disk's (here an event
    # no JSON encoder takes) must still answer its group, or its clicks would never be.
    recorder, _ = journaling

    async def clicks() -> list:
        odd = {**click(1), "rcpt_meta": {"thing": object()}}
        requests = [recorder.record([odd]), recorder.record([click(2)])]
        return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 5)

    answers = asyncio.run(clicks())
    assert [type(answer) for answer in answers] == [StoreUnavailable] * 2
    assert asyncio.run(recorder.record([click(3)])) is None


def test_stop_journals_the_requests_whose_loop_has_not_flushed_them_yet(journaling):
    # A worker's shutdown can come before its loop runs the flush its last requests wait
    # for (it may never run again): stop appends them itself, and they are answered.
    recorder, directory = journaling

    async def clicks_then_stop() -> None:
        waiting = [asyncio.create_task(recorder.record([click(n)])) for n in range(3)]
        await asyncio.sleep(0)  # each waits for the flush its loop scheduled, not run yet
        assert not any(task.done() for task in waiting)
        recorder.stop()
        await asyncio.wait_for(asyncio.gather(*waiting), 5)

    asyncio.run(clicks_then_stop())
    assert journaled_ids(directory, recorder.journal.name) == [["click-0", "click-1", "click-2"]]
    with pytest.raises(recorder_module.RecorderStopped):
        asyncio.run(recorder.record([click(3)]))


def test_folded_counts_through_the_journal_are_added_once(tmp_path):
    # Regression: a step after the indexing commit failed (deleting a journal left behind),
    # the batch was put back and indexed again, and its folded counts added again (85,238
    # folded for 16,835 requests).
    store = opened(tmp_path)
    indexer = indexer_of(store, tmp_path / "journal").start()
    recorder = EventRecorder(store, journal=Journal(tmp_path / "journal")).start()
    data = TrackingData("click", "t", "m", "a@example.org", int(time.time()), target_url="x")
    try:
        for n in range(300):
            recorder.fold(FloodCount.of_request("token", data, time.time(), False))
            if n % 100 == 0:  # some counts go alone, some with others
                time.sleep(recorder_module.FOLD_FLUSH_SECONDS + 0.2)
        recorder.stop()  # writes what is left
        indexer.stop()  # indexes what is journaled
        folded = store.transaction(
            lambda cur: cur.execute("SELECT sum(folded) FROM token_floods").fetchone(),
            write=False,
        )
        assert folded == (300,)
    finally:
        recorder.stop()
        indexer.stop()
        store.close()


def test_non_ascii_event_text_round_trips_through_the_journal(tmp_path):
    # Payloads are orjson's UTF-8 (events/payload.py), not ASCII escapes: a subject in any
    # script must be journaled, not fail the click's answer.
    events = [{"event_id": "e1", "type": "click", "timestamp": 1.0, "subject": "Grüße ☃ 日本"}]
    path = tmp_path / "journal"
    path.write_bytes(journal_module.encode_record(events))
    assert [r.events for r in journal_module.read_records(path, 0)] == [events]


ODD_VALUES = [  # what orjson would not read back as written
    {"rcpt_meta": {"big": 2**70, "negative": -(2**65)}},  # orjson reads floats
    {"subject": "lone \udcff surrogate"},  # orjson refuses it
    {"rcpt_meta": {"far": float("inf")}},  # orjson refuses Infinity
]


def odd_values_clicks() -> list[dict]:
    return [{**click(n), **odd} for n, odd in enumerate(ODD_VALUES, 1)]


def stored_payloads(store) -> list[str]:
    return store.transaction(
        lambda cur: [row[0] for row in cur.execute("SELECT payload FROM events ORDER BY id")],
        write=False,
    )


def test_each_event_is_stored_with_the_text_its_worker_journaled(tmp_path):
    # The indexer used to parse a record's events and encode them again: a metadata integer
    # beyond 64 bits reached the store as a float (1.1805916207174113e+21). Now the text the
    # worker wrote is the payload, and the event read back is the one that was clicked.
    events = [*odd_values_clicks(), {**click(4), "subject": "Grüße ☃"}]
    texts = journal_module.encode_payloads(events)
    store = opened(tmp_path)
    journal = Journal(tmp_path / "journal")
    try:
        journal.append([[event] for event in events], [[text] for text in texts])
        journal.close()
        indexer_of(store, tmp_path / "journal").index_once()
        assert stored_payloads(store) == texts
        assert store.query() == events
    finally:
        store.close()


def test_a_record_of_an_earlier_release_is_read_exactly(tmp_path):
    """Journals of releases before the separated texts hold each group as one JSON list."""
    events = odd_values_clicks()
    groups = [events[:1], events[1:]]  # the first read by orjson, then by the stdlib
    bodies = [journal_module.payload.encode(group).encode("utf-8") for group in groups]
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "1-1.journal").write_bytes(b"".join(map(journal_module._framed, bodies)))
    store = opened(tmp_path)
    try:
        indexer_of(store, directory).index_once()
        assert store.query() == events
        assert stored_payloads(store) == journal_module.encode_payloads(events)
    finally:
        store.close()


def test_a_record_without_events_is_read_and_passed(tmp_path):
    path = tmp_path / "x.journal"
    path.write_bytes(encode_record([]) + encode_record([click(1)]))
    assert [r.events for r in read_records(path, 0)] == [[], [click(1)]]


# Any keys, and often those the store's columns are made of (events/store.py event_row).
COLUMN_KEYS = ["transmission_id", "message_id", "campaign_id", "rcpt_to", "user_agent_parsed"]
COLUMN_KEYS += ["target_link_url", "target_link_name", "rcpt_tags", "mta_queue_id"]
KEYS = st.sampled_from([*COLUMN_KEYS, "bounce_class", "rcpt_meta"]) | st.text()
EVENTS = st.dictionaries(KEYS, VALUES, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(EVENTS, max_size=4), max_size=4))
def test_any_events_read_back_as_journaled(groups):
    # Any text (control characters, the record separator, line feeds, lone surrogates) and
    # any number: each record's texts come back as written, and the columns the store makes
    # of its events are those of the events written.
    identity = {"event_id": "e1", "type": "click", "timestamp": 1.0}
    groups = [[{**event, **identity} for event in events] for events in groups]
    texts = [journal_module.encode_payloads(events) for events in groups]
    data = b"".join(map(encode_record, groups, texts))
    records = list(journal_module.parse_records(data + bytes(64), 0))
    assert [record.payloads for record in records] == texts
    assert [record.end for record in records][-1:] == ([len(data)] if groups else [])
    for record in records:
        for event, text in zip(record.events, record.payloads, strict=True):
            assert event_row(event, text) == event_row(payload.decode(text), text)


def test_journal_writes_are_flushed_to_disk_by_their_write(tmp_path):
    # Durable before the answer: the journal is written with O_DSYNC (no fdatasync after).
    journal = Journal(tmp_path / "journal")
    try:
        assert fcntl.fcntl(journal._fd, fcntl.F_GETFL) & os.O_DSYNC == os.O_DSYNC
        journal.append([[click(1)]])
        assert fcntl.fcntl(journal._fd, fcntl.F_GETFL) & os.O_DSYNC == os.O_DSYNC
    finally:
        journal.close()


def test_the_indexer_process_keeps_more_of_the_store_in_memory(tmp_path):
    # PROCESS_CACHE_KIB (journal_indexer.py): SQLite's page cache of the writer's connection;
    # its commits checkpoint past CHECKPOINT_BYTES of WAL (sqlite_store.py), 256 pages of
    # 4 KiB; again once the store is opened again after it was closed.
    def writers(store) -> tuple[int, int]:
        def pragmas(cur):
            return tuple(cur.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS)

        return store.transaction(pragmas, write=True)

    PRAGMAS = ("cache_size", "wal_autocheckpoint")
    store = LazyStore(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    directory = tmp_path / "journal"
    directory.mkdir()
    indexer = indexer_of(store, directory, cache_kib=8192)
    try:
        assert indexer._step() == 0 and indexer.healthy
        assert writers(store) == (-8192, 256)
        store.close()  # as after an outage: LazyStore opens it again
        assert writers(store) == (-2000, 1000)  # SQLite's defaults
        indexer._step()
        assert writers(store) == (-8192, 256)
    finally:
        store.close()


@pytest.mark.parametrize("written", [0, 1, 16383, 16384, 16385, 100_000, (1 << 20) - 1, 1 << 20])
@pytest.mark.parametrize("position", [0, 7])
def test_a_tail_reads_what_was_written_up_to_the_zeros(tmp_path, written, position):
    path = tmp_path / "x.journal"
    text = (b"record\n" * (written // 7 + 1))[:written]
    path.write_bytes(text + bytes(max(0, (1 << 20) - written)))
    fd = os.open(path, os.O_RDONLY)
    try:
        tail = journal_indexer._Tail(fd, min(position, written))
        assert tail.read() == text[tail.position :]
        assert tail.end == written
    finally:
        os.close(fd)


def test_a_tail_reads_a_bounded_piece_of_a_long_journal_of_appended_records(tmp_path):
    path = tmp_path / "x.journal"  # an earlier release's: records to its size, no zeros
    path.write_bytes(b"record\n" * (3 * journal_indexer.READ_BYTES // 7))
    fd = os.open(path, os.O_RDONLY)
    try:
        data = journal_indexer._Tail(fd, 0).read()
        assert journal_indexer.READ_BYTES <= len(data) < 2 * journal_indexer.READ_BYTES
        assert path.read_bytes().startswith(data)
    finally:
        os.close(fd)
