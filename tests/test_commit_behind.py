"""A batch's COMMIT going on behind the follower (events/commit_behind.py): stored once it is
waited for, in both dialects; and a COMMIT that fails (the file may not grow: a real SQLite
write error, in a child process so the limit binds nothing else) is reported by the waiter
with nothing of the transaction stored, and the follower commits that batch again before
the next, losing and repeating no outcome."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .test_store import click, store, store_url  # noqa: F401 (fixtures: SQLite and PostgreSQL)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'milter'}{os.pathsep}{ROOT}"}


def test_work_committed_behind_is_stored_once_waited_for(store):  # noqa: F811 (both dialects)
    def work(cur):
        store.insert_events(cur, [click(1), click(2)])

    committed = store.commit_behind(work)
    committed()
    store.record([click(3)])  # the writer is free again
    assert [e["event_id"] for e in store.query()] == ["click-1", "click-2", "click-3"]


def test_work_that_fails_stores_nothing_and_frees_the_writer(store):  # noqa: F811
    def work(cur):
        store.insert_events(cur, [click(1)])
        raise RuntimeError("made to fail")

    try:
        store.commit_behind(work)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the work's error was not raised")
    store.record([click(2)])
    assert [e["event_id"] for e in store.query()] == ["click-2"]


FAILING_COMMIT = r"""
import json, resource, signal, sys
from smtpapi_milter.events.store import StoreUnavailable, open_store
from tests.test_store import click

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
store = open_store(sys.argv[1])
store.record([click(0)])
store.checkpoint()  # WAL empty: the next commit must grow it
store.prefer_large_writes(64 * 1024)  # the transaction stays in memory until its COMMIT
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
committed = store.commit_behind(lambda cur: store.insert_events(cur, [click(1), click(2)]))
try:
    committed()
    result = "committed"
except StoreUnavailable:
    result = "unavailable"
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
store.record([click(3)])
print(json.dumps([result, [e["event_id"] for e in store.query()]]))
store.close()
"""


def test_a_commit_that_fails_behind_is_reported_and_stores_nothing(tmp_path):
    url = f"sqlite://{tmp_path}/events.sqlite3"
    run = subprocess.run(
        [sys.executable, "-c", FAILING_COMMIT, url],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == ["unavailable", ["click-0", "click-3"]]


FOLLOWER_AFTER_A_FAILED_COMMIT = r"""
import collections, json, resource, signal, sys, threading
from smtpapi_milter.delivery.bounce_class import BounceClassifier
from smtpapi_milter.events.store import open_store
from smtpapi_milter.maillog import follower as following
from smtpapi_milter.maillog.file_source import FileSource
from smtpapi_milter.maillog.postfix import PostfixParser
from tests.test_maillog_follower import expected, injection, write

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
following.STORE_RETRY = 0.01
url, log, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
store.record([injection(i) for i in range(count)])
store.checkpoint()
write(__import__("pathlib").Path(log), 0, count)
follower = following.Follower(
    store, FileSource(log, None), PostfixParser(), BounceClassifier.load(), batch_lines=7
)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
real_commit = follower._commit


def commit(events, where):
    # The follower's own commit, the file size limit lifted once it has been waited for:
    # the first commit fails, and what comes after it has room again.
    waiter = real_commit(events, where)

    def wait():
        try:
            waiter()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

    return wait


store.prefer_large_writes(64 * 1024)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
follower._commit = commit
follower.run_once()
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
events = store.query(types=["delivery", "delay", "bounce"])
got = collections.Counter((e["type"], e["mta_queue_id"]) for e in events)
print(json.dumps([follower.store_failures, got == expected(count), len(events)]))
store.close()
"""


def test_the_follower_commits_again_a_batch_whose_commit_failed(tmp_path):
    """The first batch's commit has no room to grow the WAL: it fails behind the follower,
    which has read the next batch meanwhile; the first batch must go in again, and before
    the second (a position past both would skip its outcomes)."""
    count = 20
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            FOLLOWER_AFTER_A_FAILED_COMMIT,
            f"sqlite://{tmp_path}/events.sqlite3",
            str(tmp_path / "maillog"),
            str(count),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    failures, as_expected, stored = json.loads(run.stdout.splitlines()[-1])
    assert failures >= 1
    assert as_expected, stored
