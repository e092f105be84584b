"""Campaign reports computed in SQL (``events.stats``) against a Python oracle, on both stores.

The oracle is the definition written out plainly over the recorded events; SQLite and
PostgreSQL must both agree with it for every filter, sort and page, so they agree with each
other. Also: the migration that adds the report columns back-fills rows written before it.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smtpapi_milter.events import schema
from smtpapi_milter.events.model import policy_rejection_event
from smtpapi_milter.events.sqlite_store import sqlite_path
from smtpapi_milter.events.stats import SORTS, Scope
from smtpapi_milter.events.store import EventStore, open_store
from smtpapi_milter.tracker.useragent import is_machine

from .dashboard_data import (
    RATES,
    bounce_breakdown,
    campaign_counts,
    campaign_rates,
    engagement,
    injection,
    outcome,
)
from .harness.old_store import write_version_1

T0 = 1_700_000_000
CAMPAIGNS = ("Alpha", "alpha-2", "BETA", "gamma/δ", "", "Zeta", "zeta", "a_b%c")
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0",  # Apple Mail Privacy Protection: a machine
    "Mozilla/5.0 (via ggpht.com GoogleImageProxy)",  # Gmail's proxy: a person
    "Mozilla/5.0 (compatible; Barracuda Sentinel)",  # a scanner
    "",  # no agent at all: a machine
)
LINKS = (("https://e.example/a", "A"), ("https://e.example/b", "B"), ("https://e.example/c", ""))
# Every SparkPost class, an unknown one (99: undetermined), and "1" before "10" in the payload.
CLASSES = (1, 10, 20, 21, 22, 23, 24, 25, 30, 40, 50, 51, 52, 53, 54, 60, 70, 80, 90, 100, 99)
DOMAINS = ("Example.org", "mail.example.net", "ÿ.example", "")
SCOPES = [
    Scope(),
    Scope(since=T0 + 3 * 86400),
    Scope(until=T0 + 5 * 86400),
    Scope(since=T0 + 86400, until=T0 + 4 * 86400, tag="red"),
    Scope(tag="blue"),
    Scope(search="ALPHA"),
    Scope(search="%"),  # LIKE wildcards mean themselves
    Scope(search="_"),
    Scope(campaign=""),
    Scope(campaign="gamma/δ", tag="red"),
]


def made_up_events(seed: int = 5) -> list[dict[str, Any]]:
    """Every kind of event and agent across campaigns, recipients, tags and ten days."""
    rng, events = random.Random(seed), []
    classes = itertools.cycle(CLASSES)  # every class comes up
    for c, campaign in enumerate(CAMPAIGNS):
        for r in range(rng.randint(1, 12)):
            tags = rng.sample(["red", "blue", "green"], rng.randint(0, 2))
            domain = DOMAINS[r % len(DOMAINS)]
            rcpt = f"P{r}@{domain}" if r % 3 else f"p{r}@{domain.lower()}"
            sent = T0 + rng.random() * 8 * 86400
            mail = injection(f"{c}-{r}", campaign, rcpt, sent, tags)
            events.append(mail)
            if campaign != "zeta":  # its outcomes unknown: sent before the log was followed
                events += made_up_outcomes(rng, f"{c}-{r}", mail, classes)
            for k in range(rng.randint(0, 5)):
                at = sent + 10 + rng.random() * 86400
                agent = rng.choice(AGENTS)
                kind = rng.choice(("open", "open", "initial_open", "click"))
                link = rng.choice(LINKS) if kind == "click" else ("", "")
                events.append(engagement(f"{c}-{r}-{k}", kind, mail, at, agent, link))
                if kind == "click" and rng.random() < 0.2:
                    events.append(engagement(f"{c}-{r}-{k}u", "link_unsubscribe", mail, at, agent))
            # Not from rng, so the rest of the data stays as it was; some unsubscribed both ways.
            linked = any(
                e["type"] == "link_unsubscribe"
                and e["rcpt_to"] == mail["rcpt_to"]
                and e["campaign_id"] == campaign
                for e in events
            )
            if (c * 7 + r) % 4 == 0 or (linked and r % 2 == 0):
                agent = AGENTS[(c + r) % len(AGENTS)]  # a one-click POST, whoever sent it
                events.append(engagement(f"{c}-{r}", "list_unsubscribe", mail, sent + 900, agent))
    return events


def made_up_outcomes(
    rng: random.Random, n: str, mail: dict[str, Any], classes: Iterator[int]
) -> list[dict[str, Any]]:
    """What the MTA's log and the milter's refusals might say about one injection."""
    sent, found = float(mail["timestamp"]), []
    for k in range(rng.choice((0, 0, 1, 2))):
        found.append(outcome(f"{n}-{k}", "delay", mail, sent + 60 * (k + 1), 22))
    fate = rng.random()
    if fate < 0.45:
        found.append(outcome(n, "delivery", mail, sent + 300))
        later = rng.random()  # mail to the return path, after the delivery (bounce-in)
        if later < 0.1:
            found.append(outcome(n, "out_of_band", mail, sent + 900, rng.choice((10, 22))))
        elif later < 0.2:  # an auto-reply: bounced nothing
            found.append(outcome(n, "out_of_band", mail, sent + 900, 60) | {"auto_reply": True})
        elif later < 0.45:
            found.append(outcome(n, "spam_complaint", mail, sent + 3600, reply="-"))
    elif fate < 0.9:
        found.append(outcome(n, "bounce", mail, sent + 300, next(classes)))
    else:
        found.append(
            policy_rejection_event(
                event_id=f"rej-{n}",
                now=sent + 1,
                raw_reason="550 5.7.1 refused by site policy",
                rcpt_to=mail["raw_rcpt_to"],
                msg_from=mail["msg_from"],
                campaign_id=mail["campaign_id"],
                tags=mail["rcpt_tags"],
            )
        )
    return found


EVENTS = made_up_events()


def in_scope(event: dict[str, Any], scope: Scope) -> bool:
    stamp = float(event["timestamp"])
    return (
        (scope.since is None or stamp >= scope.since)
        and (scope.until is None or stamp < scope.until)
        and (not scope.tag or scope.tag in event["rcpt_tags"])
        and (scope.campaign is None or event["campaign_id"] == scope.campaign)
        and (not scope.search or scope.search.lower() in event["campaign_id"].lower())
    )


def oracle(scope: Scope) -> dict[str, dict[str, Any]]:
    """Per campaign, the report's numbers, by the definitions in events.stats."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in EVENTS:
        if in_scope(event, scope):
            found.setdefault(event["campaign_id"], []).append(event)
    report = {}
    for campaign, events in found.items():
        row = {
            "campaign_id": campaign,
            **campaign_counts(events),
            "first_event": min(float(e["timestamp"]) for e in events),
            "last_event": max(float(e["timestamp"]) for e in events),
        }
        row.update(campaign_rates(row))
        report[campaign] = row
    return report


def oracle_order(rows: list[dict[str, Any]], sort: str, descending: bool) -> list[str]:
    """Campaign ids in the order the store must give: by ``sort``, unknown rates last, then
    by id byte-wise (UTF-8 bytes sort as code points)."""
    key = {"recent": "last_event", "campaign": "campaign_id"}.get(sort, sort)
    if sort in RATES:  # exact ratios, as the database compares them
        part, whole = RATES[sort]
        value = {r["campaign_id"]: r[part] / r[whole] if r[whole] else None for r in rows}
    else:
        value = {r["campaign_id"]: r[key] for r in rows}
    known = [r["campaign_id"] for r in rows if value[r["campaign_id"]] is not None]
    unknown = sorted(r["campaign_id"] for r in rows if value[r["campaign_id"]] is None)
    known.sort()
    known.sort(key=lambda c: value[c], reverse=descending)  # stable: ties stay by id
    return known + unknown


@pytest.fixture(scope="module", params=[schema.SQLITE, schema.POSTGRESQL])
def store(request, tmp_path_factory) -> Iterator[EventStore]:
    """One store per backend holding :data:`EVENTS` (the tests only read)."""
    if request.param == schema.SQLITE:
        url = f"sqlite://{tmp_path_factory.mktemp('stats')}/events.sqlite3"
    else:
        url = request.getfixturevalue("postgres").create_database(f"s_{uuid.uuid4().hex[:12]}")
    opened = open_store(url)
    opened.record(EVENTS)
    yield opened
    opened.close()


@pytest.mark.parametrize("scope", SCOPES, ids=repr)
def test_report_counts_follow_the_definitions(store, scope):
    expected = oracle(scope)
    report = store.campaign_report(scope, limit=100)
    assert {row["campaign_id"]: row for row in report["campaigns"]} == expected
    totals = report["totals"]
    assert totals["campaigns"] == len(expected)
    for key in ("injections", "opens", "unique_opens", "clicks", "machine_clicks", "bounced"):
        assert totals[key] == sum(row[key] for row in expected.values())
    # Over delivered: only campaigns whose deliveries are known count.
    known = [row for row in expected.values() if row["delivered"]]
    for rate, unique in (
        ("delivered_open_rate", "unique_opens"),
        ("delivered_click_rate", "unique_clicks"),
        ("unsubscribe_rate", "unsubscribes"),
        ("spam_complaint_rate", "spam_complaints"),
    ):
        part, whole = sum(r[unique] for r in known), sum(r["delivered"] for r in known)
        assert totals[rate] == (round(part / whole, 4) if whole else None)
    assert report["any_events"] is True
    past_the_end = store.campaign_report(scope, offset=1000, limit=5)
    assert past_the_end["campaigns"] == [] and past_the_end["totals"] == totals


def test_the_data_has_every_case(store):
    # Guards the oracle comparisons above against data too thin to tell rules apart.
    everything = oracle(Scope())
    for key in ("opens", "machine_opens", "clicks", "machine_clicks"):
        assert sum(row[key] for row in everything.values()) > 5, key
    assert any(row["unique_opens"] < row["opens"] for row in everything.values())
    assert any(e["type"] == "link_unsubscribe" for e in EVENTS)
    assert any(e["type"] == "initial_open" for e in EVENTS)
    for key in ("delivered", "delayed", "policy_rejections", "undetermined_bounces"):
        assert sum(row[key] for row in everything.values()) > 1, key
    for key in ("list_unsubscribes", "link_unsubscribes", "out_of_band_bounces", "spam_complaints"):
        assert sum(row[key] for row in everything.values()) > 1, key
    # An auto-reply came back to a return path: not counted as an out-of-band bounce.
    assert any(e["type"] == "out_of_band" and e["bounce_class"] == "60" for e in EVENTS)
    # Someone unsubscribed both ways: counted once in unsubscribes.
    assert any(
        row["unsubscribes"] < row["list_unsubscribes"] + row["link_unsubscribes"]
        for row in everything.values()
    )
    for category in ("hard", "soft", "block", "admin"):
        assert sum(row[f"{category}_bounces"] for row in everything.values()) > 1, category
    assert {int(e["bounce_class"]) for e in EVENTS if e["type"] == "bounce"} == set(CLASSES)


@pytest.mark.parametrize("scope", SCOPES, ids=repr)
def test_bounce_breakdown_by_class_and_domain_follows_the_definitions(store, scope):
    expected = bounce_breakdown([e for e in EVENTS if in_scope(e, scope)])
    found = store.campaign_bounces(scope, limit=100)
    assert [(c["bounce_class"], c["bounces"]) for c in found["by_class"]] == expected["by_class"]
    assert all(c["name"] and c["category"] for c in found["by_class"])
    domains = [(d.pop("domain"), {k: v for k, v in d.items() if v}) for d in found["by_domain"]]
    assert domains == expected["by_domain"]
    assert len(store.campaign_bounces(scope, limit=2)["by_domain"]) == min(2, len(domains))


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("descending", [True, False])
def test_pages_list_every_campaign_once_in_order(store, sort, descending):
    scope = Scope(since=T0 + 86400)
    expected = oracle_order(list(oracle(scope).values()), sort, descending)
    seen: list[str] = []
    for offset in range(0, len(expected) + 3, 3):
        page = store.campaign_report(
            scope, sort=sort, descending=descending, offset=offset, limit=3
        )
        seen += [row["campaign_id"] for row in page["campaigns"]]
    assert seen == expected


def test_timeseries_counts_every_event_once_in_aligned_buckets(store):
    scope = Scope(campaign="BETA")
    events = [e for e in EVENTS if in_scope(e, scope)]
    found = store.campaign_timeseries(scope, bucket=3600, tz_offset=-5 * 3600)
    series = found["series"]
    assert found["bucket"] == 3600 and len(series) > 24  # the gaps are there too
    starts = [point["start"] for point in series]
    assert starts == list(range(starts[0], starts[-1] + 1, 3600))
    assert all((start - 5 * 3600) % 3600 == 0 for start in starts)
    assert starts[0] <= min(float(e["timestamp"]) for e in events) < starts[0] + 3600
    people = [e for e in events if not is_machine(e.get("user_agent_parsed"))]
    assert sum(p["opens"] for p in series) == sum(e["type"] == "open" for e in people)
    assert sum(p["clicks"] for p in series) == sum(e["type"] == "click" for e in people)
    assert sum(p["injections"] for p in series) == sum(e["type"] == "injection" for e in events)
    for point in series:
        inside = [
            e for e in events if point["start"] <= float(e["timestamp"]) < point["start"] + 3600
        ]
        assert point["machine_opens"] == sum(
            e["type"] == "open" and is_machine(e.get("user_agent_parsed")) for e in inside
        )


def test_timeseries_chooses_a_bucket_and_refuses_too_many(store):
    auto = store.campaign_timeseries(Scope(campaign="Alpha"))
    assert 1 <= len(auto["series"]) <= 120
    assert store.campaign_timeseries(Scope(campaign="no such"))["series"] == []
    with pytest.raises(ValueError, match="more than 1000 buckets"):
        store.campaign_timeseries(Scope(), bucket=60)


def test_links_rank_by_peoples_clicks(store):
    scope = Scope(campaign="Alpha")
    links = store.campaign_links(scope)
    expected: dict[tuple[str, str], list[int]] = {}
    for e in EVENTS:
        if in_scope(e, scope) and e["type"] == "click":
            counts = expected.setdefault((e["target_link_url"], e["target_link_name"]), [0, 0])
            counts[1 if is_machine(e.get("user_agent_parsed")) else 0] += 1
    got = {
        (x["target_link_url"], x["target_link_name"]): [x["clicks"], x["machine_clicks"]]
        for x in links
    }
    assert got == expected
    clicks = [x["clicks"] for x in links]
    assert clicks == sorted(clicks, reverse=True)


def test_empty_store_reports_nothing(tmp_path):
    empty = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    report = empty.campaign_report(Scope())
    assert report["campaigns"] == [] and report["any_events"] is False
    assert report["totals"]["campaigns"] == 0 and report["totals"]["open_rate"] is None
    assert empty.campaign_links(Scope()) == []
    empty.close()


@pytest.mark.parametrize("backend", [schema.SQLITE, schema.POSTGRESQL])
def test_migration_back_fills_rows_written_before_it(backend, tmp_path, request, monkeypatch):
    if backend == schema.SQLITE:
        sqlite_path(url := f"sqlite://{tmp_path}/old.sqlite3").parent.mkdir(exist_ok=True)
    else:
        url = request.getfixturevalue("postgres").create_database(f"m_{uuid.uuid4().hex[:12]}")
    with monkeypatch.context() as patch:
        patch.setitem(schema.MIGRATIONS, backend, schema.MIGRATIONS[backend][:1])
        write_version_1(url, EVENTS)
    upgraded = open_store(url)
    try:
        assert upgraded.migrate() == schema.LATEST  # every later migration applies too
        for scope in (Scope(), Scope(tag="red"), Scope(campaign="gamma/δ")):
            report = upgraded.campaign_report(scope, limit=100)["campaigns"]
            assert {row["campaign_id"]: row for row in report} == oracle(scope)
        assert upgraded.campaign_links(Scope(campaign="Alpha"))
    finally:
        upgraded.close()


@pytest.mark.parametrize("backend", [schema.SQLITE, schema.POSTGRESQL])
@pytest.mark.parametrize("written_before_migration_9", [False, True])
def test_a_metadata_key_bounce_class_does_not_spoof_the_class(
    backend, written_before_migration_9, tmp_path, request, monkeypatch
):
    """A sender's ``rcpt_meta`` is copied into the outcome's payload, where it used to be
    found by the dashboard's substring test before the event's own class (10 < 50)."""
    if backend == schema.SQLITE:
        url = f"sqlite://{tmp_path}/spoof.sqlite3"
    else:
        url = request.getfixturevalue("postgres").create_database(f"s_{uuid.uuid4().hex[:12]}")
    mail = injection("spoof", "sp", "victim@example.org", T0, [])
    mail["rcpt_meta"] = {"bounce_class": "10", "note": '"bounce_class":"10"'}
    bounce = outcome("spoof", "bounce", mail, T0 + 60, bounce_class=50)
    assert bounce["rcpt_meta"]["bounce_class"] == "10"
    if written_before_migration_9:  # back-filled by migration 9 from the payload
        with monkeypatch.context() as patch:
            patch.setitem(schema.MIGRATIONS, backend, schema.MIGRATIONS[backend][:1])
            write_version_1(url, [mail, bounce])
    opened = open_store(url)
    try:
        if not written_before_migration_9:
            opened.record([mail, bounce])
        found = opened.campaign_bounces(Scope(campaign="sp"))
        assert [(c["bounce_class"], c["category"]) for c in found["by_class"]] == [(50, "block")]
        [row] = opened.campaign_report(Scope(campaign="sp"))["campaigns"]
        assert (row["block_bounces"], row["hard_bounces"]) == (1, 0)
    finally:
        opened.close()
