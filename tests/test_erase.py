"""Erasing a recipient really erases them (issue 15, item 3).

It used to leave three ways back: a webhook batch built before the erase kept being retried
with the address (for up to 8 hours), links in mail already sent kept recording new events
of the recipient, and the deleted rows stayed readable in the SQLite WAL. And ``erase ''``
deleted every event without a recipient. Here a real tracker (SQLite and PostgreSQL) with a
real webhook receiver is erased through the real CLI and through the admin API.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from smtpapi_milter.events import schema
from smtpapi_milter.events.erasure import NotAnAddress, recipient_digest
from smtpapi_milter.events.store import open_store

from .harness.smtpapi import ROOT, RunningTracker
from .harness.webhook_receiver import WebhookReceiver
from .test_store import click, event
from .test_tracker import (
    admin,
    events_of,
    get,
    rewrite,
    top_html,
    tracked,
    wait_for_metric,
)

MESSAGE = (
    b"From: news@example.com\r\nTo: reader@example.org\r\nSubject: news\r\n"
    b'X-MSYS-API: {"options": {"click_tracking": true}}\r\n'
    b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<html><body><a href="https://example.com/one">one</a>'
    b' <a href="https://example.com/two">two</a></body></html>\r\n'
)
BAD_ADDRESSES = ["", "   ", "\t", "alice", "@example.com", "alice@", "a b@example.com"]


def cli_erase(tracker: RunningTracker, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "erase", "--config"]
        + [str(tracker.config_path), address],
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- the store --------------------------------------------------------------------------


@pytest.fixture(params=[schema.SQLITE, schema.POSTGRESQL])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == schema.SQLITE:
        url = f"sqlite://{tmp_path}/events.sqlite3"
    else:
        url = request.getfixturevalue("postgres").create_database(f"e_{uuid.uuid4().hex[:12]}")
    opened = open_store(url)
    yield opened
    opened.close()


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_an_empty_or_malformed_address_is_refused_and_nothing_is_deleted(store, address):
    store.record([event(1, rcpt=""), event(2, rcpt="alice@example.com")])
    with pytest.raises(NotAnAddress, match="refusing to erase"):
        store.erase_recipient(address)
    assert len(store.query()) == 2


def test_later_events_of_an_erased_recipient_are_not_stored(store):
    store.record([event(1, rcpt="Carol@Example.com"), event(2, rcpt="dave@example.com")])
    assert store.erase_recipient(" CAROL@example.com ") == 1
    store.record([event(3, rcpt="carol@EXAMPLE.com"), event(4), click(5, rcpt_to="")])
    store.record([click(6, rcpt_to="carol@example.com")])
    assert [e["event_id"] for e in store.query()] == ["ev-2", "ev-4", "click-5"]
    assert store.erase_recipient("postmaster") == 0  # RFC 5321's one address without a domain


def test_events_not_stored_for_an_erasure_are_logged_with_their_count(store, info_logs):
    # SQLite checks the list inside its insert statement; the count is made when fewer rows
    # than given went in, and a repeated event_id (passed over too) is no erasure.
    store.record([event(1, rcpt="carol@example.com")])
    assert store.erase_recipient("carol@example.com") == 1
    store.record([event(2, rcpt="carol@example.com"), event(3, rcpt="Carol@example.com")])
    store.record([event(4, rcpt="dave@example.com"), event(5, rcpt="")])
    store.record([event(4, rcpt="dave@example.com")])
    erased = [
        line for line in info_logs if line["event"] == "events of erased recipients not stored"
    ]
    assert [line["events"] for line in erased] == [2]
    assert [e["event_id"] for e in store.query()] == ["ev-4", "ev-5"]


def test_a_large_batch_is_checked_too(store):
    # Past erasure._PROBE_FIRST recipients the list is first asked whether it holds any:
    # with none, everything is stored; with one, that one's events are not.
    many = [event(i, rcpt=f"r{i}@example.com") for i in range(300)]
    store.record(many[:150])
    assert len(store.query()) == 150
    assert store.erase_recipient("r7@example.com") == 1
    store.record([*many[150:], event(400, rcpt="R7@example.com")])
    stored = [e["rcpt_to"] for e in store.query()]
    assert len(stored) == 299 and "r7@example.com" not in stored


def test_the_erasure_list_keeps_no_address(store):
    store.erase_recipient("carol@example.com")

    def rows(cur) -> list:
        cur.execute("SELECT digest FROM erased_recipients")
        return cur.fetchall()

    assert store.transaction(rows, write=False) == [(recipient_digest("carol@example.com"),)]


# --- a real tracker, a real receiver ------------------------------------------------------


def all_events(tracker: RunningTracker) -> list[dict]:
    status, body = admin(tracker, "/api/v1/events?limit=10000")
    assert status == 200, body
    return body["results"]


def erase_through(tracker: RunningTracker, via: str, address: str) -> None:
    if via == "cli":
        result = cli_erase(tracker, address)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("erased ")
    else:
        status, body = admin(tracker, f"/api/v1/recipients/{quote(address)}/events", "DELETE")
        assert status == 200 and body["deleted"] > 0, body


def holding(paths: list[Path], text: str) -> list[Path]:
    """Those of ``paths`` whose bytes contain ``text``."""
    return [path for path in paths if text.encode() in path.read_bytes()]


def sqlite_files(tracker: RunningTracker) -> list[Path]:
    db = tracker.workdir / "state" / "events.sqlite3"
    return [path for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if path.exists()]


@pytest.mark.parametrize(
    ("backend", "via"),
    [("sqlite", "cli"), ("sqlite", "api"), ("postgresql", "cli"), ("postgresql", "api")],
)
def test_erase_reaches_batches_in_flight_later_clicks_and_the_wal(request, tmp_path, backend, via):
    events = {"webhook_batch_seconds": 0.2}
    if backend == "postgresql":
        name = f"er_{uuid.uuid4().hex[:12]}"
        events["store"] = request.getfixturevalue("postgres").create_database(name)
    erased = f"erase-me-{uuid.uuid4().hex[:8]}@example.org"
    kept = f"keep-me-{uuid.uuid4().hex[:8]}@example.org"
    with WebhookReceiver(default=500) as receiver:
        tracker = RunningTracker(tmp_path, events=events)
        tracker.config_path.write_text(
            tracker.config_path.read_text()
            + f'\n[[webhooks]]\nname = "crm"\nurl = "{receiver.url()}"\n'
        )
        with tracker:
            wait_for_metric(tracker, 'smtpapi_webhook_holds_lease{endpoint="crm"} 1.0')
            links = {
                rcpt: tracked(tracker, top_html(rewrite(tracker, MESSAGE, rcpt)), "c")
                for rcpt in (erased, kept)
            }
            for rcpt in (erased, kept):
                get(tracker, links[rcpt][0])
            # A batch with the recipient is built, and failing.
            receiver.wait_until(
                lambda: any(erased.encode() in r.body for r in receiver.received), timeout=20
            )
            batch_id = receiver.received[0].batch_id

            erase_through(tracker, via, erased)
            erased_at = time.monotonic()
            receiver.default = 200

            # (a) the retry of the batch built before the erase no longer carries the address;
            # the other recipient's events still go out
            receiver.wait_until(
                lambda: any(r.answer == 200 and kept.encode() in r.body for r in receiver.received),
                timeout=30,
            )
            after = [r for r in receiver.received if r.at > erased_at]
            assert after[0].batch_id == batch_id
            assert all(erased.encode() not in r.body.lower() for r in after)

            # (b) a link in mail already sent still redirects but records nothing
            before = len(all_events(tracker))
            status, headers, _ = get(tracker, links[erased][1])
            assert status == 302 and "location" in {name.lower() for name in headers}
            assert events_of(tracker, erased) == []
            assert len(all_events(tracker)) == before
            get(tracker, links[kept][1])  # the other recipient's clicks still count
            assert len(events_of(tracker, kept)) == 2

            # (c) no trace in the SQLite files, WAL included, while the tracker runs
            assert holding(sqlite_files(tracker), erased) == []
        assert holding(sqlite_files(tracker), erased) == []
    if backend == "sqlite":
        assert sqlite_files(tracker), "the SQLite store was not where the test looked"


@pytest.mark.parametrize("address", ["", "  ", "alice"])
def test_the_cli_and_the_api_refuse_an_empty_or_malformed_address(tmp_path, address):
    with RunningTracker(tmp_path) as tracker:
        rcpt = f"someone-{uuid.uuid4().hex[:8]}@example.org"
        get(tracker, tracked(tracker, top_html(rewrite(tracker, MESSAGE, rcpt)), "c")[0])
        result = cli_erase(tracker, address)
        assert result.returncode == 2
        assert "refusing to erase" in result.stderr and result.stdout == ""
        status, body = admin(tracker, f"/api/v1/recipients/{quote(address)}/events", "DELETE")
        if address:  # an empty one does not even reach the route
            assert status == 400 and "refusing to erase" in body["error"]
        tracker.wait_indexed()  # the API reads the store, a moment behind the journal
        assert len(all_events(tracker)) == 1
