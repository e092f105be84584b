"""The engagement tracker over real HTTP, fed with links that ``smtpapi-milter rewrite`` made.

One tracker process per store backend (SQLite file, real PostgreSQL) serves every test in
this module; each test uses its own recipients so their events stay apart.
"""

from __future__ import annotations

import base64
import email
import http.client
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import lxml.html
import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker import metrics
from smtpapi_milter.tracker.app import PIXEL, location

from . import corpus
from .harness.smtpapi import ROOT, RunningTracker
from .harness.webhook_receiver import WebhookReceiver

SPECIAL_LINKS = (
    '<p><a href="https://shop.example.com/p?x=1&amp;y=2&amp;z=%20ok">amp</a>'
    '<a href="https://example.com/caf\u00e9/\U0001f600?q=a,b!c@d">emoji</a>'
    "<a href=\"https://example.com/(paren)[br]'q'\">brackets</a>"
    '<a data-msys-linkname="Main offer" href="https://example.com/offer">offer</a>'
    '<a data-msys-unsubscribe="1" href="https://example.com/unsub?u=1">unsubscribe</a></p>'
)
CAMPAIGN_POLICY = """
def validate_data_spool_each_rcpt(ctx):
    if ctx.recipient.startswith("policy-"):
        ctx.set("smtpapi_campaign_id", "set-by-policy")
"""
HEADER = (
    b'X-MSYS-API: {"campaign_id": "header-campaign", "tags": ["spring", "vip"],'
    b' "metadata": {"user_id": "12345", "plan": "gold"},'
    b' "options": {"open_tracking": true, "click_tracking": true}}'
)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracker(request, tmp_path_factory) -> Iterator[RunningTracker]:
    workdir = tmp_path_factory.mktemp(f"tracker-{request.param}")
    events = {}
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        events["store"] = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    running = RunningTracker(workdir, events=events) if events else RunningTracker(workdir)
    running.write_policy("campaign.py", CAMPAIGN_POLICY)
    with running:
        yield running


def newsletter() -> bytes:
    """A realistic corpus newsletter plus the hard cases, as a sender would inject it."""
    corpus.require()
    html = max(corpus.html_files(), key=lambda p: p.stat().st_size).read_bytes()
    html = corpus.realistic(html).replace(b"</body>", SPECIAL_LINKS.encode() + b"</body>", 1)
    return corpus.wrap_html(html, "quoted-printable", HEADER)


def rewrite(tracker: RunningTracker, message: bytes, rcpt: str) -> bytes:
    result = subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "rewrite", "--config"]
        + [str(tracker.config_path), "--rcpt", rcpt, "-"],
        input=message,
        capture_output=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
    )
    return result.stdout


def top_html(message: bytes) -> str:
    for part in email.message_from_bytes(message).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode("utf-8")
    raise AssertionError("no html part")


def tracked(tracker: RunningTracker, html: str, kind: str) -> list[str]:
    """The tracked paths (``/c/TOKEN``...) of one kind in ``html``, in document order."""
    pattern = rf"{re.escape(tracker.base_url)}(/{kind}/[A-Za-z0-9_-]+)"
    return re.findall(pattern, html)


def get(
    tracker: RunningTracker,
    path: str,
    method: str = "GET",
    agent: str = BROWSER,
    source: str = "127.0.0.1",
):
    """One request on its own connection from the loopback address ``source`` (another
    source is another reader: the flood guard stores one event per link and reader a minute).
    """
    conn = http.client.HTTPConnection(
        "127.0.0.1", tracker.port, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request(method, path, headers={"User-Agent": agent})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def admin(tracker: RunningTracker, path: str, method: str = "GET") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=30)
    try:
        conn.request(method, path, headers=tracker.admin_headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def events_of(tracker: RunningTracker, rcpt: str, kind: str | None = None) -> list[dict]:
    query = f"/api/v1/events?rcpt={quote(rcpt)}&limit=10000" + (f"&type={kind}" if kind else "")
    tracker.wait_indexed()
    status, body = admin(tracker, query)
    assert status == 200, body
    return body["results"]


def original_links(message: bytes) -> set[str]:
    """http(s) hrefs of <a> in the sender's HTML, entities decoded (lxml, not our scanner)."""
    doc = lxml.html.document_fromstring(top_html(message))
    return {h for h in doc.xpath("//a/@href") if h.startswith(("http://", "https://"))}


def test_every_click_redirects_to_its_exact_url_and_is_recorded_once(tracker):
    message, rcpt = newsletter(), f"reader-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, message, rcpt))
    clicks = tracked(tracker, html, "c")
    assert len(clicks) >= 20
    targets = set()
    for path in clicks:
        status, headers, body = get(tracker, path)
        assert status == 302 and body == b""
        assert headers["cache-control"].startswith("no-store")
        assert headers["referrer-policy"] == "no-referrer"
        targets.add(headers["location"])
    assert targets == {location(url).decode() for url in original_links(message)}
    assert "https://shop.example.com/p?x=1&y=2&z=%20ok" in targets  # &amp; decoded
    recorded = events_of(tracker, rcpt, "click")
    assert len(recorded) == len(clicks)
    assert len({e["event_id"] for e in recorded}) == len(recorded)
    for event in recorded:
        assert event["rcpt_to"] == rcpt and event["campaign_id"] == "header-campaign"
        assert event["rcpt_tags"] == ["spring", "vip"]
        assert event["rcpt_meta"] == {"user_id": "12345", "plan": "gold"}
        assert event["transmission_id"] and event["message_id"]
        assert event["ip_address"] == "127.0.0.1" and event["user_agent"] == BROWSER
        assert event["user_agent_parsed"]["is_bot"] is False or event["user_agent_parsed"][
            "machine_reason"
        ] == ("click_too_fast")
    names = {e["target_link_name"] for e in recorded}
    assert "Main offer" in names


def test_unsubscribe_link_records_click_and_link_unsubscribe(tracker):
    rcpt = f"leaver-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
    (path,) = [p for p in tracked(tracker, html, "c") if codec.decode(p[3:]).unsubscribe]
    assert get(tracker, path)[0] == 302
    kinds = sorted(e["type"] for e in events_of(tracker, rcpt))
    assert kinds == ["click", "link_unsubscribe"]


def test_pixel_is_a_gif_and_each_open_is_recorded(tracker):
    rcpt = f"opener-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    (path,) = tracked(tracker, html, "o")
    status, headers, body = get(tracker, path)
    assert (status, headers["content-type"], body) == (200, "image/gif", PIXEL)
    assert len(PIXEL) == 43 and headers["cache-control"].startswith("no-store")
    get(tracker, path, source="127.0.0.2")  # an open of the mail somewhere else
    opens = events_of(tracker, rcpt, "open")
    assert len(opens) == 2 and all(e["initial_pixel"] is False for e in opens)


def test_campaign_set_by_policy_shows_in_events(tracker):
    rcpt = f"policy-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    get(tracker, tracked(tracker, html, "c")[0])
    (event,) = events_of(tracker, rcpt)
    assert event["campaign_id"] == "set-by-policy"


def test_head_tampered_and_expired_record_nothing(tracker):
    rcpt = f"quiet-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    path = tracked(tracker, html, "c")[0]
    status, headers, body = get(tracker, path, "HEAD")
    assert status == 302 and headers["location"]
    for bad in (path[:-1], path[:-2] + ("A" if path[-2] != "A" else "B") + path[-1], "/c/xyz"):
        status, headers, body = get(tracker, bad)
        assert status == 404 and "location" not in headers
    open_path = tracked(tracker, html, "o")[0]
    assert get(tracker, "/c/" + open_path[3:])[0] == 404  # an open token is not a link
    codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
    now = int(time.time())
    expired = TrackingData(
        "click", "1", "m", rcpt, now - 100, now - 10, target_url="https://example.com/late"
    )
    status, headers, _ = get(tracker, "/c/" + codec.encode(expired))
    assert (status, headers["location"]) == (302, "https://example.com/late")
    assert events_of(tracker, rcpt) == []


def test_percent_encoded_token_still_works(tracker):
    rcpt = f"scanner-{uuid.uuid4().hex[:8]}@example.org"
    path = tracked(tracker, top_html(rewrite(tracker, newsletter(), rcpt)), "c")[0]
    encoded = "/c/" + "".join(f"%{b:02X}" for b in path[3:].encode())
    assert get(tracker, encoded)[0] == 302
    assert len(events_of(tracker, rcpt)) == 1


def test_no_token_reveals_recipient_tags_or_metadata(tracker):
    rcpt = f"secret-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    secrets = [rcpt, rcpt.split("@")[0], "spring", "vip", "12345", "gold", "header-campaign"]
    for path in tracked(tracker, html, "c") + tracked(tracker, html, "o"):
        token = path[3:]
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for secret in secrets:
            assert secret.encode() not in raw
            # In the base64 text a short word turns up by chance ("vip" in ~1 of 60 runs of
            # this test: 3 characters of 64 at ~150 places of ~30 tokens); 5 and more do not.
            assert len(secret) < 5 or secret not in path


def test_machine_opens_are_flagged(tracker):
    rcpt = f"mpp-{uuid.uuid4().hex[:8]}@example.org"
    (path,) = tracked(tracker, top_html(rewrite(tracker, newsletter(), rcpt)), "o")
    get(tracker, path, agent="Mozilla/5.0")  # Apple Mail Privacy Protection
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    get(tracker, path, agent=gmail, source="127.0.0.2")  # the proxies' addresses differ
    apple, google = (e["user_agent_parsed"] for e in events_of(tracker, rcpt))
    assert apple["is_prefetched"] and apple["is_proxy"]
    assert google["is_proxy"] and not google["is_prefetched"]


def test_events_cli_table_and_json_agree_with_the_api(tracker):
    rcpt = f"cli-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    for path in tracked(tracker, html, "c")[:3]:
        get(tracker, path)

    def cli(*args: str) -> str:
        argv = [sys.executable, "-m", "smtpapi_milter.cli", "events"]
        argv += ["--config", str(tracker.config_path), "--rcpt", rcpt.upper(), *args]
        env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
        return subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout

    tracker.wait_indexed()  # the CLI reads the store, a moment behind the journal
    lines = [json.loads(line) for line in cli("--format", "json").splitlines()]
    assert lines == events_of(tracker, rcpt)
    table = cli("--type", "click").splitlines()
    assert table[0].startswith("time (UTC)") and len(table) == 4
    assert all("click" in row and rcpt in row for row in table[1:])


def test_api_pages_with_a_cursor_and_erases_a_recipient(tracker):
    rcpt = f"pages-{uuid.uuid4().hex[:8]}@example.org"
    html = top_html(rewrite(tracker, newsletter(), rcpt))
    paths = tracked(tracker, html, "c")[:5]
    for path in paths:
        get(tracker, path)
    tracker.wait_indexed()  # the admin API reads the store, a moment behind the journal
    seen, after = [], ""
    while True:
        status, body = admin(tracker, f"/api/v1/events?rcpt={rcpt}&limit=2&after={after}")
        seen += body["results"]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert len(seen) == 5 and len({e["event_id"] for e in seen}) == 5
    assert admin(tracker, "/api/v1/events?since=yesterday")[0] == 400
    status, body = admin(tracker, f"/api/v1/recipients/{quote(rcpt)}/events", "DELETE")
    assert (status, body) == (200, {"deleted": 5})
    assert events_of(tracker, rcpt) == []


def admin_metrics(tracker: RunningTracker) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers=tracker.admin_headers)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def test_metrics_and_health(tracker):
    assert b"smtpapi_tracker_requests_total" in admin_metrics(tracker)
    assert get(tracker, "/healthz")[0] == 200
    assert get(tracker, "/nothing-here")[0] == 404
    assert get(tracker, "/c/x", "POST")[0] == 405


def test_metrics_count_exactly_across_worker_processes(tmp_path):
    # Each worker counts what it answered; the admin listener shows the sum.
    with RunningTracker(tmp_path, engagement_tracker={"workers": 2}) as tracker:
        codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
        now = int(time.time())
        for n in range(40):  # a connection each, so both workers get some
            data = TrackingData(
                "click", f"t{n}", "m", "a@example.org", now, target_url="https://x.org/"
            )
            assert get(tracker, "/c/" + codec.encode(data))[0] == 302
        line = re.compile(rb'smtpapi_tracker_requests_total\{kind="click",outcome="stored"\} (\S+)')
        # Each worker folds its counts into the prometheus values every FOLD_SECONDS, on
        # its event loop (late on a loaded machine): wait for the sum, then see it stay.
        stored = 'smtpapi_tracker_requests_total{kind="click",outcome="stored"}'
        wait_for_metric(tracker, f"{stored} 40.0\n")
        time.sleep(metrics.FOLD_SECONDS * 2)  # a count beyond 40 would have folded by now
        counts = {float(line.search(admin_metrics(tracker)).group(1)) for _ in range(3)}
        assert counts == {40.0}


def test_store_down_answers_503_and_never_redirects(tmp_path):
    # PostgreSQL with nothing listening: the tracker serves, but never redirects unrecorded.
    dead = RunningTracker(tmp_path, events={"store": "postgresql://127.0.0.1:1/events"})
    dead.ready_on_admin = True
    with dead:
        codec = TokenCodec.from_config(load_config(str(dead.config_path)), create=False)
        now = int(time.time())
        data = TrackingData("click", "1", "m", "a@example.org", now, target_url="https://x.org/")
        status, headers, body = get(dead, "/c/" + codec.encode(data))
        assert status == 503 and "location" not in headers
        assert headers["retry-after"] == "5"
        assert get(dead, "/healthz")[0] == 503
        assert admin(dead, "/api/v1/events")[0] == 503


def test_clicks_reach_a_webhook_in_sparkpost_batches(tmp_path):
    with WebhookReceiver() as receiver:
        tracker = RunningTracker(tmp_path, events={"webhook_batch_seconds": 0.2})
        tracker.config_path.write_text(
            tracker.config_path.read_text()
            + f'\n[[webhooks]]\nname = "crm"\nurl = "{receiver.url()}"\nevents = ["click"]\n'
        )
        with tracker:
            wait_for_metric(tracker, 'smtpapi_webhook_holds_lease{endpoint="crm"} 1.0')
            rcpt = f"hooked-{uuid.uuid4().hex[:8]}@example.org"
            html = top_html(rewrite(tracker, newsletter(), rcpt))
            paths = tracked(tracker, html, "c")[:3]
            for path in paths + tracked(tracker, html, "o"):
                get(tracker, path)
            receiver.wait_until(lambda: sum(len(r.events()) for r in receiver.received) >= 3, 20)
    events = [event for request in receiver.received for event in request.events()]
    assert [e["type"] for e in events] == ["click"] * 3  # the filter left the open out
    assert {e["rcpt_to"] for e in events} == {rcpt}
    body = json.loads(receiver.received[0].body)
    assert set(body[0]["msys"]) == {"track_event"}
    assert receiver.received[0].batch_id


def wait_for_metric(tracker: RunningTracker, line: str, timeout: float = 20) -> None:
    """Probe the admin /metrics until ``line`` shows (the dispatcher is delivering)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=5)
        conn.request("GET", "/metrics", headers=tracker.admin_headers)
        text = conn.getresponse().read().decode()
        conn.close()
        if line in text:
            return
        assert time.monotonic() < deadline, f"{line!r} not in admin /metrics:\n{text[-2000:]}"
        time.sleep(0.05)
