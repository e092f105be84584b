"""Traffic for the dashboard tests.

Real traffic: :func:`send` runs mail through the milter's pipeline and records its injection
events; :func:`engage` requests its tracked links over HTTP.

Events in bulk, made by the same functions the milter and the tracker use
(``injection_event``, ``engagement_event``, the real agent classifier), with timestamps
spread over days that real HTTP requests in a test cannot have:

- :func:`bulk_events`: thousands of small campaigns, all older than a day.
- :func:`showcase_events`: one campaign with a realistic week: sends in three waves, opens
  decaying after each with a daily rhythm, prefetches at delivery, scanners at delivery.
"""

from __future__ import annotations

import email
import http.client
import json
import math
import random
import re
import time
from typing import Any

from smtpapi_milter.cli import run_message
from smtpapi_milter.config import load_config
from smtpapi_milter.events.model import engagement_event, injection_event
from smtpapi_milter.events.store import StoreTagRegistry
from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.policy import PolicySet
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker.useragent import is_machine, user_agent_parsed

from . import corpus
from .harness.smtpapi import RunningTracker

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.1"
LINKS = (
    '<p><a data-msys-linkname="Main offer" href="https://shop.example.com/offer">offer</a>'
    '<a data-msys-linkname="Read more" href="https://shop.example.com/story">story</a>'
    '<a href="https://shop.example.com/plain">plain</a>'
    '<a data-msys-unsubscribe="1" href="https://shop.example.com/unsub">unsubscribe</a></p>'
)
BULK_CAMPAIGNS = 2100
DAY = 86400
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
PEOPLE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    GMAIL,
)
APPLE_MPP = "Mozilla/5.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"
SHOWCASE_LINKS = (
    ("https://shop.example.com/offer", "Main offer"),
    ("https://shop.example.com/story", "Read more"),
    ("https://shop.example.com/shoes?utm_source=newsletter", "Shoes"),
    ("https://shop.example.com/stores", ""),
)


def injection(n: str, campaign: str, rcpt: str, at: float, tags: list[str]) -> dict[str, Any]:
    """The injection event of one recipient's copy, numbered ``n``."""
    return injection_event(
        event_id=f"inj-{n}",
        transmission_id=f"tx-{campaign}",
        message_id=f"msg-{n}",
        rcpt_to=rcpt,
        campaign_id=campaign,
        customer_id="",
        tags=tags,
        metadata=None,
        msg_from="news@example.com",
        friendly_from="news@example.com",
        subject=f"{campaign} news",
        injection_time=at,
    )


# Copied from the injection a delivery outcome joins (SPEC 13), as the log follower does.
JOINED = (
    "transmission_id", "message_id", "campaign_id", "customer_id", "rcpt_to", "raw_rcpt_to",
    "rcpt_tags", "rcpt_meta", "msg_from", "friendly_from", "subject", "injection_time",
    "mta_queue_id",
)  # fmt: skip
REPLIES = {
    "delivery": "250 2.0.0 Ok: queued as 4XyZ",
    "delay": "452 4.2.2 Mailbox full",
    "bounce": "550 5.1.1 User unknown",
    "out_of_band": "550 5.1.1 User unknown (a DSN mailed back)",
    "spam_complaint": "-",
}


def outcome(
    n: str, kind: str, sent: dict[str, Any], at: float, bounce_class: int = 10, reply: str = ""
) -> dict[str, Any]:
    """A ``delivery``, ``delay`` or ``bounce`` event for the mail of injection event ``sent``,
    with SparkPost's message_event fields (the shared field names of issue 16)."""
    reply = reply or REPLIES[kind]
    event = {"type": kind, "event_id": f"{kind}-{n}", "timestamp": str(int(at))}
    event.update({key: sent.get(key, "") for key in JOINED})
    event.update(
        delv_method="esmtp",
        ip_address="192.0.2.25",
        routing_domain=sent["rcpt_to"].rpartition("@")[2],
        queue_time=str(int((at - float(sent["timestamp"])) * 1000)),
        num_retries="0" if kind == "delivery" else "1",
        outbound_tls="1",
    )
    if kind != "delivery":
        event.update(
            error_code=reply[:3],
            raw_reason=reply,
            reason=reply,
            bounce_class=str(bounce_class),
        )
    return event


def engagement(
    n: str, kind: str, sent: dict[str, Any], at: float, agent: str, link=("", "")
) -> dict[str, Any]:
    """A ``kind`` event at ``at`` for the mail of injection event ``sent``, by ``agent``."""
    injected = float(sent["timestamp"])
    data = TrackingData(
        kind=kind,
        transmission_id=sent["transmission_id"],
        message_id=sent["message_id"],
        rcpt_to=sent["rcpt_to"],
        injection_time=int(injected),
        campaign_id=sent["campaign_id"],
        tags=tuple(sent["rcpt_tags"]),
        target_url=link[0],
        link_name=link[1],
    )
    return engagement_event(
        kind=kind,
        event_id=f"{kind}-{n}",
        now=at,
        data=data,
        ip_address="192.0.2.7",
        user_agent=agent,
        user_agent_parsed=user_agent_parsed(agent, kind, injected, at),
    )


def bulk_events(count: int = BULK_CAMPAIGNS, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` campaigns ``bulk-0000``...: one or two recipients each, days ago."""
    rng, now, events = random.Random(seed), time.time(), []
    for n in range(count):
        campaign = f"bulk-{n:04d}"
        for r in range(1 + n % 2):
            at = now - 2 * DAY - rng.random() * 20 * DAY
            mail = injection(f"{campaign}-{r}", campaign, f"r{r}@bulk.example", at, [])
            events.append(mail)
            if rng.random() < 0.5:
                opened = at + rng.random() * DAY / 2
                events.append(engagement(f"{campaign}-{r}", "open", mail, opened, PEOPLE[1]))
    return events


def _daily_rhythm(at: float) -> float:
    """How likely people read mail at this time of day (UTC): high by day, low at night."""
    hour = (at % DAY) / 3600
    return 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) if 6 <= hour <= 22 else 0.2


def showcase_events(recipients: int = 300, seed: int = 11) -> list[dict[str, Any]]:
    """``showcase-week``: a week of sends, opens, clicks, prefetches and scanners."""
    rng, now, events = random.Random(seed), time.time(), []
    waves = [now - 7 * DAY + 3600, now - 4 * DAY, now - 1 * DAY - 3600]
    for r in range(recipients):
        at = waves[r % len(waves)] + rng.random() * 600
        rcpt = f"person{r}@showcase.example"
        mail = injection(f"show-{r}", "showcase-week", rcpt, at, ["weekly"])
        events.append(mail)
        if r % 5 == 0:  # Apple Mail Privacy Protection fetches the pixel on delivery
            events.append(engagement(f"show-{r}-mpp", "open", mail, at + 60, APPLE_MPP))
        if r % 9 == 0:  # a gateway scanner follows a link on delivery
            link = SHOWCASE_LINKS[r % len(SHOWCASE_LINKS)]
            scanned = at + 2
            events.append(engagement(f"show-{r}-scan", "click", mail, scanned, SCANNER, link))
        for k in range(rng.choice((0, 0, 1, 1, 2, 3))):
            opened = at + rng.expovariate(1 / (DAY / 3))
            if opened >= now or rng.random() > _daily_rhythm(opened):
                continue
            agent = PEOPLE[r % len(PEOPLE)]
            events.append(engagement(f"show-{r}-{k}", "open", mail, opened, agent))
            if rng.random() < 0.35:
                link = SHOWCASE_LINKS[min(int(rng.expovariate(1.2)), len(SHOWCASE_LINKS) - 1)]
                clicked = opened + rng.random() * 120
                if clicked < now:
                    events.append(
                        engagement(f"show-{r}-{k}-c", "click", mail, clicked, agent, link)
                    )
    return events


MIX_DOMAINS = ("gmail.example", "yahoo.example", "corp.example", "tiny.example")
MIX_BOUNCES = (10, 10, 22, 51, 54, 21, 1, 25, 30, 52, 10, 50)


def delivery_mix_events(recipients: int = 80) -> list[dict[str, Any]]:
    """``bounce-mix``, three days ago: deliveries, delays, bounces of every category across
    four recipient domains, out-of-band bounces, an auto-reply, spam complaints, and people
    reading what was delivered."""
    now, events = time.time(), []
    sent_at = now - 3 * DAY
    bounces = iter(MIX_BOUNCES * recipients)
    for r in range(recipients):
        rcpt = f"user{r}@{MIX_DOMAINS[r % 7 % len(MIX_DOMAINS)]}"
        mail = injection(f"mix-{r}", "bounce-mix", rcpt, sent_at + r, ["mix"])
        events.append(mail)
        if r % 4 == 1:
            events.append(outcome(f"mix-{r}", "delay", mail, sent_at + 600, 22))
        if r % 5 == 2:
            events.append(outcome(f"mix-{r}", "bounce", mail, sent_at + 900, next(bounces)))
            continue
        if r % 11 == 3:
            continue  # still queued: no outcome yet
        events.append(outcome(f"mix-{r}", "delivery", mail, sent_at + 900))
        if r % 13 == 4:  # accepted, then bounced by mail to the return path (bounce-in)
            later = outcome(f"mix-{r}", "out_of_band", mail, sent_at + 1800, 10, "550 5.1.1 gone")
            events.append(later)
        if r % 26 == 5:  # an out-of-office reply: not a bounce
            away = outcome(f"mix-{r}-a", "out_of_band", mail, sent_at + 1900, 60, "Away")
            events.append(away | {"auto_reply": True})
        if r % 9 == 6:
            complaint = outcome(f"mix-{r}", "spam_complaint", mail, sent_at + 7200, reply="-")
            events.append(complaint | {"fbtype": "abuse", "report_by": "fbl.example.net"})
        if r % 3 == 0:
            opened = sent_at + 3600 + r
            events.append(engagement(f"mix-{r}", "open", mail, opened, PEOPLE[r % 2]))
            if r % 2 == 0:
                link = SHOWCASE_LINKS[r % len(SHOWCASE_LINKS)]
                events.append(
                    engagement(f"mix-{r}", "click", mail, opened + 30, PEOPLE[r % 2], link)
                )
    return events


def http_get(port: int, path: str, agent: str = BROWSER, etag: str = "", token: str = "") -> tuple:
    """(status, headers with lower-case names, body) of one GET on loopback."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"User-Agent": agent, **({"If-None-Match": etag} if etag else {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        found = {name.lower(): value for name, value in response.getheaders()}
        return response.status, found, response.read()
    finally:
        conn.close()


def message(campaign: str, tags: list[str]) -> bytes:
    header = json.dumps(
        {
            "campaign_id": campaign,
            "tags": tags,
            "options": {"open_tracking": True, "click_tracking": True},
        }
    )
    corpus.require()
    html = corpus.realistic(corpus.html_files()[0].read_bytes())
    html = html.replace(b"</body>", LINKS.encode() + b"</body>", 1)
    return corpus.wrap_html(html, "quoted-printable", b"X-MSYS-API: " + header.encode())


def html_part(data: bytes) -> str:
    for part in email.message_from_bytes(data).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode("utf-8")
    raise AssertionError("no html part")


def send(tracker: RunningTracker, store, campaign: str, tags: list[str], rcpts: list[str]):
    """Run mail for ``rcpts`` through the milter's pipeline; record its injection events.

    Returns, per recipient, the tracked paths: {"o": [...], "c": {link name: path}}.
    """
    config = load_config(str(tracker.config_path))
    pipeline = Pipeline(
        config,
        PolicySet.load(config.policy.directory),
        TokenCodec.from_config(config, create=False),
        tag_registry=StoreTagRegistry(store),
        clock=lambda: time.time() - 3600,
    )
    parsed = parse_message_file(message(campaign, tags))
    codec, paths = pipeline.codec, {}
    for rcpt in rcpts:
        result = run_message(pipeline, parsed.headers, parsed.body, rcpt, "news@example.com")
        copy = result.copies[0]
        store.record([copy.injection])
        delivered = parsed.to_bytes(result.header_edits + copy.header_edits, copy.body)
        html = html_part(delivered)
        base = re.escape(f"http://127.0.0.1:{tracker.port}")
        found = {"o": re.findall(rf"{base}(/o/[A-Za-z0-9_-]+)", html), "c": {}}
        for path in re.findall(rf"{base}(/c/[A-Za-z0-9_-]+)", html):
            data = codec.decode(path[3:])
            name = "unsubscribe" if data.unsubscribe else data.link_name or data.target_url
            found["c"].setdefault(name, path)
        paths[rcpt] = found
    return paths


def engage(tracker: RunningTracker, paths: dict, script: list[tuple[int, str, str, str]]):
    """Request tracked paths over HTTP: (recipient index, "o" or link name, agent)."""
    rcpts = list(paths)
    for index, what, agent in script:
        found = paths[rcpts[index]]
        path = found["o"][0] if what == "o" else found["c"][what]
        status, _, _ = http_get(tracker.port, path, agent=agent)
        assert status in (200, 302), (what, status)


def odd_ids() -> list[dict]:
    """Three days ago: a campaign id with a "/" in it, and mail sent without a campaign id."""
    events, old = [], time.time() - 3 * 86400
    for n, campaign in enumerate(("news/letter", "")):
        mail = injection(f"odd-{n}", campaign, f"odd{n}@example.org", old, [])
        link = ("https://x.example/", "X")
        events += [mail, engagement(f"odd-{n}", "click", mail, old + 600, BROWSER, link)]
    return events


# SparkPost's bounce categories (support.sparkpost.com/docs/deliverability/
# bounce-classification-codes); any other class is undetermined.
CATEGORY_CLASSES = {
    "hard": {10, 30, 90},
    "soft": {20, 21, 22, 23, 24, 40, 60, 70, 100},
    "block": {50, 51, 52, 53, 54},
    "admin": {25, 80},
}


def bounce_category(event: dict[str, Any]) -> str:
    number = int(event["bounce_class"])
    return next((c for c, found in CATEGORY_CLASSES.items() if number in found), "undetermined")


def campaign_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """A campaign's report numbers, by their definitions, counted plainly over its events:
    the oracle the SQL reports (events.stats) and the dashboard are held to."""
    people = [e for e in events if not is_machine(e.get("user_agent_parsed"))]
    machines = [e for e in events if is_machine(e.get("user_agent_parsed"))]
    bounces = [bounce_category(e) for e in events if e["type"] == "bounce"]
    outcomes = {
        "delivered": sum(e["type"] == "delivery" for e in events),
        "delayed": sum(e["type"] == "delay" for e in events),
        "bounced": len(bounces),
        **{f"{c}_bounces": bounces.count(c) for c in (*CATEGORY_CLASSES, "undetermined")},
        "policy_rejections": sum(e["type"] == "policy_rejection" for e in events),
        "out_of_band_bounces": sum(
            e["type"] == "out_of_band" and e["bounce_class"] != "60" for e in events
        ),
        "spam_complaints": sum(e["type"] == "spam_complaint" for e in events),
        # Each suppressed its recipient: people and machines alike.
        "list_unsubscribes": sum(e["type"] == "list_unsubscribe" for e in events),
        "link_unsubscribes": sum(e["type"] == "link_unsubscribe" for e in events),
        "unsubscribes": len(
            {e["rcpt_to"] for e in events if e["type"] in ("list_unsubscribe", "link_unsubscribe")}
        ),
    }
    return outcomes | {
        "injections": sum(e["type"] == "injection" for e in events),
        "opens": sum(e["type"] == "open" for e in people),
        "unique_opens": len(
            {e["rcpt_to"] for e in people if e["type"] in ("open", "initial_open")}
        ),
        "clicks": sum(e["type"] == "click" for e in people),
        "unique_clicks": len({e["rcpt_to"] for e in people if e["type"] == "click"}),
        "machine_opens": sum(e["type"] == "open" for e in machines),
        "machine_clicks": sum(e["type"] == "click" for e in machines),
    }


# rate -> (numerator, denominator)
RATES = {
    "open_rate": ("unique_opens", "injections"),
    "click_rate": ("unique_clicks", "injections"),
    "delivery_rate": ("delivered", "injections"),
    "delivered_open_rate": ("unique_opens", "delivered"),
    "delivered_click_rate": ("unique_clicks", "delivered"),
    "unsubscribe_rate": ("unsubscribes", "delivered"),
    "spam_complaint_rate": ("spam_complaints", "delivered"),
}


def campaign_rates(counts: dict[str, int]) -> dict[str, float | None]:
    """The rates of :func:`campaign_counts`, rounded as the reports give them."""
    return {
        rate: round(counts[part] / counts[whole], 4) if counts[whole] else None
        for rate, (part, whole) in RATES.items()
    }


def bounce_breakdown(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Bounces by class and by recipient domain (each domain split by category), counted
    plainly: the oracle of the ``/bounces`` report. Order: most first, then class / domain."""
    bounces = [e for e in events if e["type"] == "bounce"]
    classes: dict[int, int] = {}
    domains: dict[str, dict[str, int]] = {}
    for event in bounces:
        number = int(event["bounce_class"])
        known = any(number in found for found in CATEGORY_CLASSES.values())
        number = number if known or number == 1 else 1
        classes[number] = classes.get(number, 0) + 1
        domain = event["rcpt_to"].lower().rpartition("@")[2]
        split = domains.setdefault(domain, {"bounces": 0})
        split["bounces"] += 1
        key = f"{bounce_category(event)}_bounces"
        split[key] = split.get(key, 0) + 1
    by_class = sorted(classes.items(), key=lambda item: (-item[1], item[0]))
    by_domain = sorted(domains.items(), key=lambda item: (-item[1]["bounces"], item[0]))
    return {"by_class": by_class, "by_domain": by_domain}
