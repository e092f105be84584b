"""Floods of one tracked link, X-Forwarded-For hops and where /metrics lives, over real HTTP.

A replayed link must keep redirecting while what is stored stays bounded (issue 15, item 1):
the tracker runs with its default two worker processes, so the bounds asserted are the
guard's per-worker rule (at most one event per token and client per window per worker).
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.tokens import TokenCodec, TrackingData

from .harness.smtpapi import ROOT, RunningTracker
from .test_tracker import BROWSER, admin, events_of

WORKERS = 2  # the default
HOURLY_LIMIT = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracker(request, tmp_path_factory) -> Iterator[RunningTracker]:
    workdir = tmp_path_factory.mktemp(f"flood-{request.param}")
    sections: dict = {
        "engagement_tracker": {
            "flood_token_hourly_limit": HOURLY_LIMIT,
            "trusted_proxies": ["127.0.0.1/32"],
        }
    }
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        sections["events"] = {"store": server.create_database(f"f_{uuid.uuid4().hex[:12]}")}
    with RunningTracker(workdir, **sections) as running:
        yield running


def message_id(rcpt: str) -> str:
    """A message id of the recipient's mail that does not name the recipient."""
    return "m-" + str(uuid.uuid5(uuid.NAMESPACE_URL, rcpt))


def click_path(tracker: RunningTracker, rcpt: str) -> str:
    codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
    data = TrackingData(
        "click",
        "t1",
        message_id(rcpt),
        rcpt,
        int(time.time()),
        campaign_id="flood-test",
        target_url="https://shop.example/offer",
    )
    return "/c/" + codec.encode(data)


def get(tracker: RunningTracker, path: str, source: str = "127.0.0.1", headers=None):
    """One request on its own connection (so both worker processes get some), from the
    loopback address ``source``."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", tracker.port, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers={"User-Agent": BROWSER, **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def flood_row(tracker: RunningTracker, message: str, folded: int) -> dict:
    """The token's counter row once it shows ``folded`` requests (written within a second
    of the fold, or with the next commit: probe until then)."""
    deadline = time.monotonic() + 15
    while True:
        status, body = admin(tracker, "/api/v1/floods?limit=1000")
        assert status == 200, body
        rows = [row for row in body["results"] if row["message_id"] == message]
        if rows and rows[0]["folded"] >= folded:
            return rows[0]
        assert time.monotonic() < deadline, f"no {folded} folded for {message}: {rows}"
        time.sleep(0.05)


def test_replayed_link_redirects_every_time_and_stores_one_event_per_client(tracker):
    rcpt = f"replayed-{uuid.uuid4().hex[:8]}@example.org"
    path = click_path(tracker, rcpt)
    replays = 200
    answers = [get(tracker, path) for _ in range(replays)]
    assert all(status == 302 for status, _ in answers)
    assert {headers["location"] for _, headers in answers} == {"https://shop.example/offer"}
    stored = len(events_of(tracker, rcpt, "click"))
    assert 1 <= stored <= WORKERS
    row = flood_row(tracker, message_id(rcpt), replays - stored)
    assert row["folded"] == replays - stored  # every request is either a row or counted
    assert row["abused_at"] is not None  # more than the hourly limit at one worker at least
    assert row["campaign_id"] == "flood-test" and rcpt not in str(row)
    status, body = admin(tracker, "/api/v1/floods?abused=1")
    assert row["token_key"] in {r["token_key"] for r in body["results"]}

    # Another client's click of the same link is an engagement of its own.
    assert get(tracker, path, source="127.0.0.2")[0] == 302
    assert len(events_of(tracker, rcpt, "click")) == stored + 1


def test_many_clients_are_bounded_by_the_hourly_limit_per_token(tracker):
    rcpt = f"forwarded-{uuid.uuid4().hex[:8]}@example.org"
    path = click_path(tracker, rcpt)
    # Behind a trusted proxy each request names another reader.
    clients = [f"198.51.100.{n}" for n in range(1, 81)]
    for client in clients:
        assert get(tracker, path, headers={"X-Forwarded-For": client})[0] == 302
    stored = events_of(tracker, rcpt, "click")
    assert HOURLY_LIMIT <= len(stored) <= HOURLY_LIMIT * WORKERS
    assert {event["ip_address"] for event in stored} <= set(clients)
    row = flood_row(tracker, message_id(rcpt), len(clients) - len(stored))
    assert row["folded"] == len(clients) - len(stored)
    assert row["abused_at"] is not None


def test_a_repeat_after_the_window_is_stored_again(tmp_path):
    window = 1.0
    with RunningTracker(
        tmp_path, engagement_tracker={"workers": 1, "flood_window": window}
    ) as tracker:
        rcpt = "patient@example.org"
        path = click_path(tracker, rcpt)
        assert get(tracker, path)[0] == 302
        assert get(tracker, path)[0] == 302  # within the window: counted, not stored
        assert len(events_of(tracker, rcpt, "click")) == 1
        deadline = time.monotonic() + 10
        while len(events_of(tracker, rcpt, "click")) < 2:  # probe until the window has passed
            assert time.monotonic() < deadline
            assert get(tracker, path)[0] == 302
            time.sleep(0.1)
        first, second = events_of(tracker, rcpt, "click")
        assert float(second["timestamp"]) - float(first["timestamp"]) >= window
        metrics = admin_text(tracker, "/metrics")
        folded = re.search(r'requests_total\{kind="click",outcome="folded"\} (\S+)', metrics)
        assert folded is not None and float(folded.group(1)) >= 1


def test_forwarded_for_hop_that_is_no_address_is_not_believed(tracker):
    # From a trusted proxy, but the hop it passes on is not an address: the reader is the
    # one who connected, never text the client made up.
    for forwarded in ("<script>alert(1)</script>", "203.0.113.5, evil.example", "unknown"):
        rcpt = f"forged-{uuid.uuid4().hex[:8]}@example.org"
        path = click_path(tracker, rcpt)
        assert get(tracker, path, headers={"X-Forwarded-For": forwarded})[0] == 302
        [event] = events_of(tracker, rcpt, "click")
        assert event["ip_address"] == "127.0.0.1", forwarded
    rcpt = f"proxied-{uuid.uuid4().hex[:8]}@example.org"
    assert get(tracker, click_path(tracker, rcpt), headers={"X-Forwarded-For": " 2001:DB8::1"})
    assert [e["ip_address"] for e in events_of(tracker, rcpt, "click")] == ["2001:db8::1"]


def admin_text(tracker: RunningTracker, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=30)
    try:
        conn.request("GET", path, headers=tracker.admin_headers)
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def test_metrics_are_on_the_admin_listener_only(tracker):
    conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=30)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 404 and b"smtpapi_tracker" not in response.read()
    conn.close()
    text = admin_text(tracker, "/metrics")
    assert 'smtpapi_tracker_requests_total{kind="click",outcome="stored"}' in text


@pytest.mark.parametrize(("key", "value"), [("flood_window", -1), ("flood_token_hourly_limit", -5)])
def test_a_negative_flood_setting_is_refused_naming_file_and_key(tmp_path, key, value):
    service = RunningTracker(tmp_path, engagement_tracker={key: value})
    result = subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "tracker", "--config"]
        + [str(service.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert f"{service.config_path}: 'engagement_tracker.{key}' must not be negative" in (
        result.stderr + result.stdout
    )


def test_a_click_the_store_refused_is_not_folded_on_retry(tmp_path):
    # The store is down: the click answers 503 and the reader retries. The retry must not be
    # taken for a repeat of a stored click (a redirect without any event).
    dead = RunningTracker(tmp_path, events={"store": "postgresql://127.0.0.1:1/events"})
    dead.ready_on_admin = True
    with dead:
        path = click_path(dead, "retrying@example.org")
        for _ in range(3):
            status, headers = get(dead, path)
            assert status == 503 and "location" not in headers
