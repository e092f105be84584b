"""The tracker's events and redirects, built by its per-click fast path, equal the reference
construction (events/model.py's engagement_event, app.py's quote and is_unambiguous) for
every kind of token: stored through the real recorder and store, compared field by field
and in key order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpapi_milter.events.model import engagement_event, tracking_events
from smtpapi_milter.events.store import open_store
from smtpapi_milter.tokens import TokenCodec, TrackingData, _parse_key, generate_key
from smtpapi_milter.tracker import app as tracker_app
from smtpapi_milter.tracker import metrics, useragent
from smtpapi_milter.tracker.app import (
    _URL_SAFE,
    Answer,
    ClientAddress,
    TrackerApp,
    location_text,
    redirect_location,
)
from smtpapi_milter.tracker.recorder import EventRecorder
from smtpapi_milter.tracker.rsgi import RsgiRequests
from smtpapi_milter.tracker.useragent import user_agent_parsed
from smtpapi_milter.unambiguous_url import is_unambiguous

NOW = 1_700_000_000.25
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"


def reference_events(
    kind: str, ids: list[str], data: TrackingData, address: str, agent: str, now: float
) -> list[dict[str, Any]]:
    """What the tracker stored before its fast path: one engagement_event per kind."""
    kinds = [kind, "link_unsubscribe"] if kind == "click" and data.unsubscribe else [kind]
    parsed = user_agent_parsed(agent, kind, data.injection_time, now)
    return [
        engagement_event(
            kind=event_kind,
            event_id=event_id,
            now=now,
            data=data,
            ip_address=address,
            user_agent=agent,
            user_agent_parsed=parsed,
        )
        for event_kind, event_id in zip(kinds, ids, strict=True)
    ]


def same(events: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert events == reference
    # Key order too: it is the order of the stored JSON.
    assert json.dumps(events, ensure_ascii=False) == json.dumps(reference, ensure_ascii=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
tracking_data = st.builds(
    TrackingData,
    kind=st.sampled_from(["click", "open", "initial_open"]),
    transmission_id=st.text(),
    message_id=st.text(),
    rcpt_to=st.text(),
    injection_time=st.integers(int(NOW) - 10, int(NOW)),  # clicks too fast for a person too
    expires=st.integers(0, 2**40),
    campaign_id=st.text(),
    tags=st.lists(st.text(), max_size=3).map(tuple),
    metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=4),
    customer_id=st.text(),
    target_url=st.text(),
    link_name=st.text(),
    unsubscribe=st.booleans(),
)


@pytest.fixture(autouse=True, scope="module")
def _user_agent_parser_built():
    # Built on first use (useragent.warm_up): 0.3 s here, past Hypothesis's 200 ms deadline
    # for the first example when this module runs first (regression: it failed run alone).
    useragent.warm_up()


@given(tracking_data, st.text(), st.text(), st.floats(NOW - 5, NOW + 5))
def test_tracking_events_are_the_reference_events(data, address, agent, now):
    counter = iter(range(1_000_000))
    ids: list[str] = []

    def new_id() -> str:
        ids.append(f"id-{next(counter)}")
        return ids[-1]

    parsed = user_agent_parsed(agent, data.kind, data.injection_time, now)
    events = tracking_events(data.kind, new_id, now, data, address, agent, parsed)
    same(events, reference_events(data.kind, ids, data, address, agent, now))
    if len(events) == 2:  # nothing shared that the reference did not share
        assert events[0]["rcpt_tags"] is not events[1]["rcpt_tags"]


urls = st.text() | st.text(alphabet=st.sampled_from('htps:/.example%?&=#@[]\\ \t"<>^`{|}é😀'))


@given(urls)
def test_location_text_is_quote(url):
    assert location_text(url) == quote(
        url, safe=_URL_SAFE, encoding="utf-8", errors="surrogatepass"
    )


@given(st.lists(urls | st.sampled_from(["https://a.example/", "https://b.example/x y"])))
def test_redirect_location_is_the_check_and_the_text(targets):
    for url in targets:
        expected = location_text(url) if is_unambiguous(url) else None
        assert redirect_location(url) == expected
        assert redirect_location(url) == expected  # decided once, kept


def test_redirect_locations_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(tracker_app, "MAX_TARGETS", 3)
    for n in range(10):
        assert redirect_location(f"https://example.com/{n}") == f"https://example.com/{n}"
        assert len(tracker_app._redirects) <= 3
    long = "https://example.com/" + "é" * tracker_app.MAX_TARGET_CHARS
    assert redirect_location(long) == location_text(long)
    assert long not in tracker_app._redirects


@pytest.fixture(autouse=True)
def _no_counts_left():
    yield
    # The requests' counts of loops closed before their fold would go with a later test's
    # loop (metrics.py) and add to what tests/test_tracker_metrics.py reads: added now.
    metrics._fold_all()


class Scope:
    """The parts of Granian's RSGI scope that the tracker reads."""

    def __init__(self, peer: str, headers: dict[str, str]):
        self.client = f"{peer}:40000"
        self.headers = headers


BASE = TrackingData(
    kind="click",
    transmission_id="7000000000001",
    message_id="0001000000000001",
    rcpt_to="Reader.One@Example.org",
    injection_time=int(NOW) - 3600,
    campaign_id="frühling-☀",
    tags=("newsletter", "ünïcode"),
    metadata={"list": "weekly", "名前": ["値", 1, 2.5, None, True], "big": 2**70},
    customer_id="42",
)
TARGET = "https://www.example.com/articles/3?utm_source=newsletter&utm_medium=email"


def variant(**changes: Any) -> TrackingData:
    return dataclasses.replace(BASE, **changes)


CASES = [
    ("click", variant(target_url=TARGET, link_name="Read"), "198.51.100.7", {}),
    ("click", variant(target_url="https://bücher.example/ä ö?q=€", link_name="ñ"), "::1", {}),
    ("click", variant(target_url=TARGET, unsubscribe=True), "203.0.113.9", {}),
    ("click", variant(target_url=TARGET, metadata=None, tags=()), "203.0.113.9", {}),
    ("click", variant(target_url=TARGET, injection_time=int(NOW) - 1), "203.0.113.9", {}),
    ("open", variant(kind="open"), "203.0.113.9", {}),
    ("initial_open", variant(kind="initial_open"), "203.0.113.9", {}),
    # From a trusted proxy: the client is the last hop not ours.
    ("open", variant(kind="open"), "10.0.0.5", {"x-forwarded-for": "2001:DB8::1, 10.0.0.9"}),
]


@pytest.mark.parametrize(("kind", "data", "peer", "headers"), CASES)
def test_stored_events_and_answers_are_the_reference(tmp_path, kind, data, peer, headers):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store).start()
    codec = TokenCodec([_parse_key(generate_key(), "test key")])
    address = ClientAddress(["10.0.0.0/8"])
    app = TrackerApp(codec, recorder, address, lambda: True, clock=lambda: NOW)
    scope = Scope(peer, {"user-agent": BROWSER, **headers})
    token = codec.encode(data)
    try:
        answer = asyncio.run(app.track(kind, token, "GET", scope, RsgiRequests(address)))
        expired_token = codec.encode(dataclasses.replace(data, expires=int(NOW) - 1))
        expired = asyncio.run(app.track(kind, expired_token, "GET", scope, RsgiRequests(address)))
    finally:
        recorder.stop()
    stored = store.query()
    store.close()
    client = "2001:db8::1" if headers else peer
    ids = [event["event_id"] for event in stored]
    same(stored, reference_events(kind, ids, data, client, BROWSER, NOW))
    expected = location_text(data.target_url) if kind == "click" else Answer.PIXEL
    assert answer == expected
    assert expired == expected  # answered alike, nothing stored


def test_ambiguous_and_misplaced_targets_are_not_found(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store).start()
    codec = TokenCodec([_parse_key(generate_key(), "test key")])
    address = ClientAddress([])
    app = TrackerApp(codec, recorder, address, lambda: True, clock=lambda: NOW)
    scope = Scope("203.0.113.9", {"user-agent": BROWSER})
    reader = RsgiRequests(address)
    tokens = [
        ("click", variant(target_url="https://good.example\\@evil.example/")),
        ("click", variant()),  # a click without a target
        ("open", variant(kind="open", target_url=TARGET)),  # a pixel with one
        ("open", variant(target_url=TARGET)),  # a click token on the open path
    ]
    try:
        for kind, data in tokens:
            answer = asyncio.run(app.track(kind, codec.encode(data), "GET", scope, reader))
            assert answer is Answer.NOT_FOUND
    finally:
        recorder.stop()
    assert store.query() == []
    store.close()
