"""One-click unsubscribe over real HTTP (SPEC 14, RFC 8058): ``/u/TOKEN`` on a real tracker.

The List-Unsubscribe URLs come from ``smtpapi-milter rewrite`` with list_unsubscribe on, as
a recipient's mail carries them. One tracker per store backend serves every test; each test
has recipients of its own.
"""

from __future__ import annotations

import dataclasses
import email
import http.client
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.events.model import envelope
from smtpapi_milter.events.store import open_store
from smtpapi_milter.suppression.store import list_entries, lookup
from smtpapi_milter.tokens import TokenCodec

from .harness.smtpapi import RunningTracker
from .test_tracker import BROWSER, events_of, rewrite, top_html, tracked

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
# Gmail's one-click POSTs come from Google's servers with a user agent like this one.
PROVIDER = "Mozilla/5.0 (compatible; Google-List-Unsubscribe)"
HTML = (
    '<html><body><p>News</p><a href="https://example.com/sale">Sale</a>'
    '<a data-msys-unsubscribe="1" href="https://example.com/leave">Leave</a></body></html>\r\n'
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracker(request, tmp_path_factory) -> Iterator[RunningTracker]:
    workdir = tmp_path_factory.mktemp(f"unsub-{request.param}")
    sections = {"smtpapi": {"list_unsubscribe": True}}
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        sections["events"] = {"store": server.create_database(f"u_{uuid.uuid4().hex[:12]}")}
    with RunningTracker(workdir, **sections) as running:
        yield running


def message(rcpt: str) -> bytes:
    return (
        f"From: News <news@example.com>\r\nTo: {rcpt}\r\nSubject: News\r\n"
        'X-MSYS-API: {"campaign_id": "weekly", "options": {"click_tracking": true}}\r\n'
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML
    ).encode()


def recipient(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def unsubscribe_path(tracker: RunningTracker, rcpt: str) -> str:
    """The /u/ path in the List-Unsubscribe header of ``rcpt``'s copy."""
    header = email.message_from_bytes(rewrite(tracker, message(rcpt), rcpt))["List-Unsubscribe"]
    match = re.fullmatch(rf"<{re.escape(tracker.base_url)}(/u/[A-Za-z0-9_-]+)>", header)
    assert match, header
    return match.group(1)


def request(
    tracker: RunningTracker,
    method: str,
    path: str,
    body: bytes | None = None,
    agent: str = PROVIDER,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=30)
    try:
        headers = {"User-Agent": agent}
        if body is not None:
            headers["Content-Type"] = FORM
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def suppressed(tracker: RunningTracker, rcpt: str) -> str | None:
    """The source of ``rcpt``'s suppression for newsletters in the tracker's store, if any."""
    store = open_store(load_config(str(tracker.config_path)).event_store_url)
    try:
        if rcpt not in lookup(store, [rcpt], transactional=False):
            return None
        (entry,) = list_entries(store, recipient=rcpt)
        assert entry.type == "non_transactional"
        return entry.source
    finally:
        store.close()


def codec(tracker: RunningTracker) -> TokenCodec:
    return TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)


def test_get_shows_a_confirmation_page_and_records_nothing(tracker):
    rcpt = recipient("looker")
    path = unsubscribe_path(tracker, rcpt)
    status, headers, page = request(tracker, "GET", path, agent=BROWSER)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"].startswith("no-store")
    assert "default-src 'none'" in headers["content-security-policy"]
    text = page.decode()
    assert rcpt in text and re.search(r"<form method=post>.*<button", text)
    assert "src=" not in text and "href=" not in text and "http" not in text  # nothing fetched
    status, _, body = request(tracker, "HEAD", path)
    assert (status, body) == (200, b"")
    assert events_of(tracker, rcpt) == [] and not suppressed(tracker, rcpt)


def test_post_records_one_list_unsubscribe_and_suppresses(tracker):
    rcpt = recipient("leaver")
    path = unsubscribe_path(tracker, rcpt)
    status, _, page = request(tracker, "POST", path, ONE_CLICK)
    assert status == 200 and b"Unsubscribed" in page
    # Durable before the answer: the event and the entry are there the moment it came.
    (event,) = events_of(tracker, rcpt)
    assert event["type"] == "list_unsubscribe" and event["campaign_id"] == "weekly"
    assert event["rcpt_to"] == rcpt and event["transmission_id"] and event["message_id"]
    assert event["user_agent"] == PROVIDER and "target_link_url" not in event
    assert envelope(event)["msys"]["unsubscribe_event"] is event
    assert suppressed(tracker, rcpt) == "list_unsubscribe"


def test_confirmation_form_post_works_too_and_any_body_is_read_only_in_part(tracker):
    rcpt = recipient("former")
    path = unsubscribe_path(tracker, rcpt)
    status, _, _ = request(tracker, "POST", path, b"x=" + b"y" * 2_000_000, agent=BROWSER)
    assert status == 200 and suppressed(tracker, rcpt)
    assert [e["type"] for e in events_of(tracker, rcpt)] == ["list_unsubscribe"]


def test_tampered_wrong_kind_and_nameless_tokens_404_and_add_nothing(tracker):
    rcpt = recipient("forger")
    path = unsubscribe_path(tracker, rcpt)
    flipped = path[:-1] + ("A" if path[-1] != "A" else "B")
    click_token = codec(tracker).encode(
        dataclasses.replace(codec(tracker).decode(path[3:]), kind="click", target_url="https://x")
    )
    nameless = codec(tracker).encode(
        dataclasses.replace(codec(tracker).decode(path[3:]), rcpt_to="")
    )
    for bad in (flipped, path[:-5], "/u/", "/u/!!", f"/u/{click_token}", f"/u/{nameless}"):
        for method in ("GET", "POST"):
            status, _, page = request(tracker, method, bad, ONE_CLICK if method == "POST" else None)
            assert status == 404, (bad, method)
            assert b"not valid" in page
    # An unsubscribe token is no click either.
    assert request(tracker, "GET", "/c/" + path[3:])[0] == 404
    assert events_of(tracker, rcpt) == [] and not suppressed(tracker, rcpt)
    assert request(tracker, "PUT", path, b"")[0] == 405


def test_expired_token_is_still_honoured(tracker):
    rcpt = recipient("late")
    path = unsubscribe_path(tracker, rcpt)
    old = dataclasses.replace(codec(tracker).decode(path[3:]), expires=int(time.time()) - 60)
    status, _, _ = request(tracker, "POST", "/u/" + codec(tracker).encode(old), ONE_CLICK)
    assert status == 200 and suppressed(tracker, rcpt)
    assert [e["type"] for e in events_of(tracker, rcpt)] == ["list_unsubscribe"]


def test_link_unsubscribe_click_suppresses_in_the_same_commit(tracker):
    rcpt = recipient("clicker")
    html = top_html(rewrite(tracker, message(rcpt), rcpt))
    tokens = codec(tracker)
    (leave,) = [p for p in tracked(tracker, html, "c") if tokens.decode(p[3:]).unsubscribe]
    (sale,) = [p for p in tracked(tracker, html, "c") if not tokens.decode(p[3:]).unsubscribe]
    status, headers, _ = request(tracker, "GET", sale, agent=BROWSER)
    assert status == 302 and not suppressed(tracker, rcpt)  # an ordinary click is no opt-out
    status, headers, _ = request(tracker, "GET", leave, agent=BROWSER)
    assert status == 302 and headers["location"] == "https://example.com/leave"
    assert sorted(e["type"] for e in events_of(tracker, rcpt)) == [
        "click",
        "click",
        "link_unsubscribe",
    ]
    assert suppressed(tracker, rcpt) == "link_unsubscribe"


def stored(tracker: RunningTracker, rcpt: str) -> tuple[list[str], list[str]]:
    """(event types, suppression sources) of ``rcpt`` read from the store itself."""
    store = open_store(load_config(str(tracker.config_path)).event_store_url)
    try:
        kinds = [e["type"] for e in store.query(rcpt=rcpt)]
        return kinds, [entry.source for entry in list_entries(store, recipient=rcpt)]
    finally:
        store.close()


def test_acknowledged_unsubscribe_survives_sigkill(tmp_path):
    """Durable before the 200: killed the moment it answered, both are on disk."""
    rcpt = recipient("killed")
    with RunningTracker(tmp_path, smtpapi={"list_unsubscribe": True}) as tracker:
        path = unsubscribe_path(tracker, rcpt)
        assert request(tracker, "POST", path, ONE_CLICK)[0] == 200
        os.killpg(tracker.process.pid, signal.SIGKILL)  # the whole tree, no goodbyes
        tracker.process.wait()
        tracker.process = None
    assert stored(tracker, rcpt) == (["list_unsubscribe"], ["list_unsubscribe"])


def test_store_down_answers_503_and_the_retry_counts(postgres_running, tmp_path):
    rcpt = recipient("retried")
    database = postgres_running.create_database(f"u_{uuid.uuid4().hex[:12]}")
    tracker = RunningTracker(
        tmp_path, smtpapi={"list_unsubscribe": True}, events={"store": database}
    )
    with tracker:
        path = unsubscribe_path(tracker, rcpt)
        postgres_running.stop()
        try:
            status, headers, _ = request(tracker, "POST", path, ONE_CLICK)
            assert status == 503 and headers["retry-after"] == "5"
        finally:
            postgres_running.start()
        assert stored(tracker, rcpt) == ([], [])
        deadline = time.monotonic() + 30
        while (status := request(tracker, "POST", path, ONE_CLICK)[0]) != 200:
            assert status == 503 and time.monotonic() < deadline  # reconnecting
            time.sleep(0.2)  # the provider's retry, paced
        assert stored(tracker, rcpt) == (["list_unsubscribe"], ["list_unsubscribe"])
