"""The engagement dashboard in headless Chromium, against a real tracker on each store backend.

Mail goes through the milter's own pipeline (the code ``smtpapi-milter rewrite`` runs, with
a clock an hour back so clicks are not "faster than a person"); its injection events are
recorded as the milter records them; then its real tracked links are opened and clicked over
HTTP with a browser's agent, Apple Mail Privacy Protection's prefetch, Gmail's image proxy
and a link scanner. The page must show what ``smtpapi-milter events --format json`` reports
for the same campaign, counted by the rules of ``events.stats``.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from smtpapi_milter.config import load_config
from smtpapi_milter.events.store import open_store
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker.useragent import is_machine

from .dashboard_data import (
    APPLE_MPP,
    BROWSER,
    BULK_CAMPAIGNS,
    GMAIL,
    SCANNER,
    bounce_breakdown,
    bulk_events,
    campaign_counts,
    campaign_rates,
    delivery_mix_events,
    engage,
    engagement,
    http_get,
    odd_ids,
    outcome,
    send,
    showcase_events,
)
from .harness.browser import chromium
from .harness.smtpapi import ROOT, RunningTracker

CAMPAIGN = "spring-sale"
TOKEN_KEY = "smtpapi-milter-admin-token"  # where dashboard.js keeps the token (sessionStorage)
SNEAKY = '<img src=x onerror="window.pwned=1">'  # a campaign id that is markup
CATEGORIES = ("hard", "soft", "block", "admin", "undetermined")
STATS = (
    "injections",
    "delivered",
    "delivery_rate",
    "bounced",
    "unique_opens",
    "delivered_open_rate",
    "open_rate",
    "unique_clicks",
    "delivered_click_rate",
    "click_rate",
    "opens",
    "clicks",
    "machine_opens",
    "machine_clicks",
    "unsubscribes",
    "unsubscribe_rate",
)


@dataclass
class Filled:
    tracker: RunningTracker
    store_url: str
    backend: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request, tmp_path_factory) -> Iterator[Filled]:
    workdir = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    events = {}
    if request.param == "postgresql":
        events["store"] = request.getfixturevalue("postgres").create_database(
            f"d_{uuid.uuid4().hex[:12]}"
        )
    tracker = RunningTracker(workdir, events=events) if events else RunningTracker(workdir)
    with tracker:
        url = load_config(str(tracker.config_path)).event_store_url
        store = open_store(url)
        try:
            rcpts = [f"reader{n}-{uuid.uuid4().hex[:6]}@example.org" for n in range(5)]
            paths = send(tracker, store, CAMPAIGN, ["spring", "vip"], rcpts)
            engage(
                tracker,
                paths,
                [
                    (0, "o", BROWSER),
                    (0, "o", BROWSER),
                    (0, "Main offer", BROWSER),
                    (0, "Read more", BROWSER),
                    (1, "o", APPLE_MPP),
                    (1, "o", BROWSER),
                    (2, "o", GMAIL),
                    (2, "Main offer", GMAIL),
                    (2, "unsubscribe", BROWSER),
                    (3, "Main offer", SCANNER),
                    (3, "Read more", SCANNER),
                    (3, "https://shop.example.com/plain", SCANNER),
                ],
            )
            store.record(outcomes_of(store.query(campaign=CAMPAIGN, types=["injection"])))
            sneaky = send(tracker, store, SNEAKY, ["autumn"], ["someone@example.net"])
            engage(tracker, sneaky, [(0, "o", BROWSER)])
            store.record(bulk_events() + showcase_events() + odd_ids() + delivery_mix_events())
        finally:
            store.close()
        yield Filled(tracker, url, request.param)


def outcomes_of(injections: list[dict]) -> list[dict]:
    """What the MTA's log says about the five readers: three delivered, one delayed then
    bounced (invalid recipient: hard), one blocked as spam. And reader0 pressed its mailbox's
    one-click unsubscribe button (reader2 used the sender's unsubscribe link)."""
    by_rcpt = {event["rcpt_to"][:7]: event for event in injections}
    later = time.time() - 3000
    found = [outcome(f"sale-{n}", "delivery", by_rcpt[f"reader{n}"], later) for n in range(3)]
    found.append(outcome("sale-3", "delay", by_rcpt["reader3"], later, 22))
    found.append(outcome("sale-3", "bounce", by_rcpt["reader3"], later + 60, 10))
    found.append(outcome("sale-4", "bounce", by_rcpt["reader4"], later, 51))
    found.append(engagement("sale-0", "list_unsubscribe", by_rcpt["reader0"], later + 90, ""))
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with chromium() as context:
        yield context


@pytest.fixture()
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab; any script error or blocked resource on it fails the test."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield tab
    tab.close()
    assert problems == []


def expected_counts(tracker: RunningTracker, campaign: str) -> dict[str, str]:
    """The page's numbers for ``campaign``, worked out from the events CLI's JSON lines."""
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "events", "--config"]
    argv += [str(tracker.config_path), "--campaign", campaign, "--format", "json"]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout
    events = [json.loads(line) for line in out.splitlines()]
    counts = campaign_counts(events)
    shown = {key: f"{value:,}" for key, value in counts.items()}
    shown.update({rate: percent(value) for rate, value in campaign_rates(counts).items()})
    shown["main_offer_clicks"] = str(
        sum(
            e["type"] == "click"
            and e["target_link_name"] == "Main offer"
            and not is_machine(e.get("user_agent_parsed"))
            for e in events
        )
    )
    return shown


def percent(ratio: float | None) -> str:
    """As the page writes a rate (en-US, at most one decimal)."""
    if ratio is None:
        return "—"
    return f"{round(ratio * 100, 1):.1f}".removesuffix(".0") + "%"


def open_dashboard(page: Page, filled: Filled, fragment: str = "") -> None:
    # As if the token had been typed into the page once (the login test does that).
    page.add_init_script(
        f"sessionStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(filled.tracker.admin_token)})"
    )
    page.goto(f"{filled.tracker.admin_url}/dashboard{fragment and '/' + fragment}")


def test_campaign_shows_what_the_events_cli_reports(filled, page, tmp_path):
    expected = expected_counts(filled.tracker, CAMPAIGN)
    # The fixture's traffic covers every kind of count, so no comparison is 0 == 0.
    assert all(expected[key] not in ("0", "0%") for key in STATS), expected
    open_dashboard(page, filled)
    row = page.locator("#campaigns tbody tr").filter(
        has=page.get_by_role("link", name=CAMPAIGN, exact=True)
    )
    for key in STATS:
        expect(row.locator(f'td[data-stat="{key}"]')).to_have_text(expected[key])
    row.get_by_role("link", name=CAMPAIGN).click()
    expect(page.locator("#campaign-name")).to_have_text(CAMPAIGN)
    for key in ("injections", "unique_opens", "unique_clicks", "opens", "clicks"):
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(expected[key])
    for key in ("machine_opens", "machine_clicks", "delivered", "delayed", "bounced"):
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(expected[key])
    for key in ("hard_bounces", "block_bounces", "delivery_rate", "delivered_open_rate"):
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(expected[key])
    for key in ("unsubscribes", "list_unsubscribes", "link_unsubscribes", "unsubscribe_rate"):
        assert expected[key] not in ("0", "0%"), key
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(expected[key])
    for chart in ("#opens-chart", "#clicks-chart"):
        # Both people's and machines' columns are plotted, with a tooltip each.
        expect(page.locator(f"{chart} svg rect.human").first).to_be_visible()
        expect(page.locator(f"{chart} svg rect.machine").first).to_be_visible()
        assert page.locator(f"{chart} svg rect title").count() >= 2
    offer = page.locator("#links tbody tr").filter(has_text="Main offer")
    expect(offer.locator('td[data-stat="clicks"]')).to_have_text(expected["main_offer_clicks"])
    expect(offer.locator("svg.meter rect.human")).to_have_count(1)
    shot = tmp_path / f"campaign-{filled.backend}.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_campaign_ids_are_shown_as_text_never_run_as_markup(filled, page):
    open_dashboard(page, filled, "#/?search=" + "onerror")
    link = page.get_by_role("link", name=SNEAKY, exact=True)
    expect(link).to_be_visible()
    assert page.locator("#view img").count() == 0
    link.click()
    expect(page.locator("#campaign-name")).to_have_text(SNEAKY)
    assert page.evaluate("window.pwned") is None


def test_thousands_of_campaigns_page_search_sort_and_filter(filled, page, tmp_path):
    total = BULK_CAMPAIGNS + 6  # bulk, showcase, spring-sale, the sneaky one, odd ids, mix
    open_dashboard(page, filled)
    info = page.locator("#page-info")
    expect(info).to_have_text(f"1–50 of {total:,} · page 1 of {-(-total // 50)}")
    rows = page.locator("#campaigns tbody tr")
    expect(rows).to_have_count(50)
    page.screenshot(path=tmp_path / f"list-{filled.backend}.png")
    first = rows.first.locator("th").inner_text()
    page.get_by_role("button", name="Next").click()
    expect(info).to_have_text(re.compile(r"^51–100 of"))
    assert rows.first.locator("th").inner_text() != first
    assert "page=2" in page.url
    page.go_back()
    expect(info).to_have_text(re.compile(r"^1–50 of"))

    page.get_by_role("searchbox").fill("BULK-042")  # any case; a part of the id
    expect(rows).to_have_count(10)
    assert set(rows.locator("th").all_inner_texts()) == {f"bulk-042{n}" for n in range(10)}
    page.get_by_role("searchbox").fill("no-such-campaign")
    expect(page.locator("#empty")).to_contain_text("No campaigns match")

    page.get_by_role("searchbox").fill("")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Injections").click()
    expect(rows.first.locator("th")).to_have_text("showcase-week")
    page.get_by_label("Time").select_option("24h")
    expect(info).to_have_text(re.compile(r"^1–3 of 3 "))
    page.get_by_label("Tag").select_option("autumn")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("th")).to_have_text(SNEAKY)
    page.screenshot(path=tmp_path / f"filtered-{filled.backend}.png", full_page=True)


def test_showcase_charts_span_the_week(filled, page, tmp_path):
    open_dashboard(page, filled, "#/campaign/showcase-week")
    expect(page.locator("#campaign-name")).to_have_text("showcase-week")
    caption = page.locator("#opens-chart figcaption")
    expect(caption).to_contain_text("Opens per")
    bars = page.locator("#opens-chart svg rect.human")
    expect(bars.first).to_be_visible()
    assert bars.count() > 20  # a week of activity, many buckets with people's opens
    # No delivery outcomes known for it: no outcome bar, no bounce panels, nothing in their place.
    expect(page.locator("#outcomes, #bounce-classes")).to_have_count(0)
    assert "null" not in page.locator("#view").inner_text()
    page.screenshot(path=tmp_path / f"showcase-{filled.backend}.png", full_page=True)


def test_empty_store_behind_a_token(tmp_path, page):
    token = uuid.uuid4().hex
    with RunningTracker(tmp_path, engagement_tracker={"admin_token": token}) as tracker:
        assert http_get(tracker.admin_port, "/api/v1/campaigns")[0] == 401
        page.goto(f"{tracker.admin_url}/dashboard")
        login = page.locator("#login")
        expect(login).to_be_visible()
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Show the dashboard").click()
        expect(page.locator("#login-error")).to_have_text("That token was not accepted.")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Show the dashboard").click()
        expect(page.locator("#empty")).to_contain_text("No engagement yet")
        expect(login).to_be_hidden()
        page.screenshot(path=tmp_path / "empty-store.png")
        page.goto(f"{tracker.admin_url}/dashboard/#/campaign/nothing-here")
        expect(page.locator("#empty")).to_contain_text("No events of this campaign")
        page.screenshot(path=tmp_path / "empty-campaign.png")


def test_dashboard_files_are_small_and_self_contained(filled):
    port = filled.tracker.admin_port
    status, headers, _ = http_get(port, "/dashboard")
    assert (status, headers["location"]) == (308, "dashboard/")
    status, headers, page = http_get(port, "/dashboard/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assets = re.findall(rb'(?:href|src)="(static/[^"]+)"', page)
    assert len(assets) == 4
    weight = len(page)
    for asset in assets:
        status, headers, body = http_get(port, "/dashboard/" + asset.decode())
        assert status == 200, asset
        weight += len(body)
        # Nothing is fetched from anywhere else: mail servers often have no way out.
        assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", body), asset
        again = http_get(port, "/dashboard/" + asset.decode(), etag=headers["etag"])
        assert again[0] == 304
    assert weight < 40_000, weight


def api(filled: Filled, path: str) -> tuple[int, dict]:
    status, _, body = http_get(filled.tracker.admin_port, path, token=filled.tracker.admin_token)
    return status, json.loads(body)


def test_api_reads_ids_with_a_slash_and_the_empty_id(filled):
    status, body = api(filled, "/api/v1/campaigns/news%2Fletter")
    assert status == 200 and body["results"]["campaign_id"] == "news/letter"
    assert body["results"]["clicks"] == 1 and body["results"]["click_rate"] == 1.0
    status, body = api(filled, "/api/v1/campaigns/news%2Fletter/links")
    assert [link["target_link_name"] for link in body["results"]] == ["X"]
    status, body = api(filled, "/api/v1/campaigns/")
    assert status == 200 and body["results"]["campaign_id"] == ""
    status, body = api(filled, "/api/v1/campaigns//timeseries?bucket=3600&tz_offset=3600")
    assert body["bucket"] == 3600 and sum(p["clicks"] for p in body["results"]) == 1
    # A campaign named "links" is its own campaign, not the links of the empty id.
    assert api(filled, "/api/v1/campaigns/links")[0] == 404
    status, body = api(filled, "/api/v1/tags")
    assert {"spring", "vip", "autumn"} <= set(body["results"])


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/campaigns?sort=nope",
        "/api/v1/campaigns?order=up",
        "/api/v1/campaigns?per_page=0",
        "/api/v1/campaigns?per_page=501",
        "/api/v1/campaigns?page=x",
        "/api/v1/campaigns?since=yesterday",
        "/api/v1/campaigns/showcase-week/timeseries?bucket=59",
        "/api/v1/campaigns/showcase-week/timeseries?bucket=60",  # 10,080 buckets in a week
        "/api/v1/campaigns/showcase-week/timeseries?tz_offset=90000",
        "/api/v1/campaigns/showcase-week/links?limit=0",
    ],
)
def test_api_says_what_is_wrong_with_a_query(filled, path):
    status, body = api(filled, path)
    assert status == 400 and body["error"]


def test_campaign_page_breaks_bounces_down_by_class_and_domain(filled, page, tmp_path):
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "events", "--config"]
    argv += [str(filled.tracker.config_path), "--campaign", "bounce-mix", "--format", "json"]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout
    events = [json.loads(line) for line in out.splitlines()]
    expected = bounce_breakdown(events)
    counts = campaign_counts(events)
    open_dashboard(page, filled, "#/campaign/bounce-mix?range=all")
    expect(page.locator("#campaign-name")).to_have_text("bounce-mix")
    for key in ("delivered", "bounced", "hard_bounces", "soft_bounces", "block_bounces"):
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(f"{counts[key]:,}")
    # Reports mailed back to the return path (bounce-in): the auto-reply is not a bounce.
    assert counts["out_of_band_bounces"] > 0 and counts["spam_complaints"] > 0
    for key in ("out_of_band_bounces", "spam_complaints"):
        expect(page.locator(f'.card [data-stat="{key}"]')).to_have_text(f"{counts[key]:,}")
    rate = counts["spam_complaints"] / counts["delivered"]
    expect(page.locator('.card [data-stat="spam_complaint_rate"]')).to_have_text(
        re.compile(rf"^{round(rate * 100, 1):g}\s?%$")
    )
    classes = page.locator("#bounce-classes tbody tr")
    expect(classes).to_have_count(len(expected["by_class"]))
    for row, (number, bounces) in zip(classes.all(), expected["by_class"], strict=True):
        assert row.get_attribute("data-class") == str(number)
        expect(row.locator('td[data-stat="bounces"]')).to_have_text(str(bounces))
    domains = page.locator("#bounce-domains tbody tr")
    expect(domains).to_have_count(len(expected["by_domain"]))
    for row, (domain, split) in zip(domains.all(), expected["by_domain"], strict=True):
        expect(row.locator("th")).to_have_text(domain)
        for key in ("bounces", "hard_bounces", "soft_bounces", "block_bounces"):
            cell = row.locator(f'td[data-stat="{key}"]')
            expect(cell).to_have_text(str(split.get(key, 0)))
    # The outcome bar: delivered and each bounce category drawn, with tooltips.
    for part in ("delivered", "hard", "soft", "block", "admin", "undetermined", "pending"):
        expect(page.locator(f"#outcomes svg rect.{part}")).to_have_count(1)
    shot = tmp_path / f"bounces-{filled.backend}.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 20_000


def test_api_gives_the_bounce_breakdown(filled):
    status, body = api(filled, "/api/v1/campaigns/bounce-mix/bounces?limit=2")
    assert status == 200 and len(body["by_domain"]) == 2
    assert {c["category"] for c in body["by_class"]} == {
        "hard",
        "soft",
        "block",
        "admin",
        "undetermined",
    }
    invalid = next(c for c in body["by_class"] if c["bounce_class"] == 10)
    assert (invalid["name"], invalid["category"]) == ("Invalid Recipient", "hard")
    status, body = api(filled, "/api/v1/campaigns?sort=delivery_rate&search=bounce-mix")
    (row,) = body["results"]
    assert row["delivery_rate"] == round(row["delivered"] / row["injections"], 4)
    assert row["bounced"] == sum(row[f"{c}_bounces"] for c in CATEGORIES)
    assert api(filled, "/api/v1/campaigns/bounce-mix/bounces?limit=0")[0] == 400


def test_campaign_page_marks_a_flooded_link(tmp_path, page):
    # One link replayed past the hourly limit: its row says so, the other link's does not.
    with RunningTracker(tmp_path, engagement_tracker={"flood_token_hourly_limit": 5}) as tracker:
        codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
        for url, times in (("https://shop.example/flooded", 40), ("https://shop.example/calm", 2)):
            data = TrackingData(
                "click", "t", "m", "a@example.org", 1, campaign_id="replayed", target_url=url
            )
            path = "/c/" + codec.encode(data)
            for _ in range(times):
                conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=30)
                conn.request("GET", path)
                assert conn.getresponse().status == 302
                conn.close()
        deadline = time.monotonic() + 15
        while not flooded(tracker):  # the counter is written within a second: probe
            assert time.monotonic() < deadline
            time.sleep(0.05)
        token = json.dumps(tracker.admin_token)
        page.add_init_script(f"sessionStorage.setItem({json.dumps(TOKEN_KEY)}, {token})")
        page.goto(f"{tracker.admin_url}/dashboard/#/campaign/replayed")
        rows = page.locator("#links tbody tr")
        expect(rows.filter(has_text="flooded").locator(".flood")).to_contain_text(
            "repeated requests not stored"
        )
        expect(rows.filter(has_text="calm")).to_have_count(1)
        expect(rows.filter(has_text="calm").locator(".flood")).to_have_count(0)


def flooded(tracker: RunningTracker) -> bool:
    url = tracker.admin_url + "/api/v1/floods?abused=1"
    request = urllib.request.Request(url, headers=tracker.admin_headers)
    with urllib.request.urlopen(request) as response:
        return bool(json.loads(response.read())["results"])
