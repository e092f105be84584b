"""Webhook delivery over real HTTP on loopback, against a SQLite file and a real PostgreSQL.

The contract (SPEC 7): SparkPost-shaped batches with the configured auth and signature; only
a 2xx counts; a failing or hanging receiver is retried until it recovers or the retry window
closes; a batch re-sent (after a failure, a restart, a takeover by another node) carries the
same batch id and the same events, and no event ever travels in two different batches; one
dead endpoint never holds up another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from smtpapi_milter.config import WebhookConfig, parse_config
from smtpapi_milter.events import schema
from smtpapi_milter.events.model import envelope
from smtpapi_milter.events.sqlite_store import sqlite_path
from smtpapi_milter.events.store import EventStore, open_store
from smtpapi_milter.events.webhook_cursor import read_cursor
from smtpapi_milter.events.webhooks import (
    DeliveryTuning,
    WebhookDispatcher,
    endpoint_key,
    endpoint_label,
)
from smtpapi_milter.sandbox.ports import free_port

from .harness.old_store import write_version_1
from .harness.webhook_receiver import HANG, Received, WebhookReceiver

FAST = DeliveryTuning(
    max_batch=100,
    max_wait=0.0,
    timeout=2.0,
    retry_base=0.02,
    retry_cap=0.1,
    poll_interval=0.05,
    scan_gap=0.005,
    lease_seconds=3.0,
    store_retry=0.1,
    start_at="earliest",
)


@pytest.fixture(params=[schema.SQLITE, schema.POSTGRESQL])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == schema.SQLITE:
        return f"sqlite://{tmp_path}/events.sqlite3"
    return request.getfixturevalue("postgres").create_database(f"w_{uuid.uuid4().hex[:12]}")


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/events.sqlite3"


@pytest.fixture()
def opened() -> Iterator[Callable[[str], EventStore]]:
    """Open stores by URL (each call a new store object, as another process would have)."""
    stores: list[EventStore] = []

    def open_(url: str) -> EventStore:
        stores.append(open_store(url))
        return stores[-1]

    yield open_
    for store in stores:
        store.close()


@pytest.fixture()
def dispatch() -> Iterator[Callable[..., WebhookDispatcher]]:
    """Make and start dispatchers; every one is stopped after the test."""
    made: list[WebhookDispatcher] = []

    def start(store: EventStore, hooks: list[WebhookConfig], **options) -> WebhookDispatcher:
        tuning = options.pop("tuning", FAST)
        dispatcher = WebhookDispatcher(store, hooks, tuning=tuning, **options)
        made.append(dispatcher)
        dispatcher.start()
        return dispatcher

    yield start
    for dispatcher in made:
        assert dispatcher.stop(5.0), "a webhook thread did not stop"


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


def ev(n: int, kind: str = "click", **fields) -> dict:
    """A flat event numbered ``n`` of type ``kind``, stamped now."""
    return {
        "type": kind,
        "event_id": f"{kind}-{n}",
        "timestamp": str(int(time.time())),
        "rcpt_to": f"user{n}@example.com",
        "campaign_id": "spring",
        "target_link_url": "https://example.com/sale",
        **fields,
    }


def hook(url: str, **fields) -> WebhookConfig:
    return WebhookConfig(url=url, **fields)


def by_batch(requests: list[Received]) -> dict[str, list[Received]]:
    groups: dict[str, list[Received]] = defaultdict(list)
    for r in requests:
        groups[r.batch_id].append(r)
    return groups


def assert_batch_contract(requests: list[Received], expected_ids: list[str]) -> None:
    """Every event delivered; a repeat only as a whole batch under the same id and body."""
    groups = by_batch(requests)
    owner: dict[str, str] = {}
    for batch_id, copies in groups.items():
        assert len({r.body for r in copies}) == 1, f"batch {batch_id} changed between sends"
        for event_id in copies[0].event_ids():
            assert owner.setdefault(event_id, batch_id) == batch_id, f"{event_id} in two batches"
    delivered = {i for r in requests if r.answer == 200 for i in r.event_ids()}
    assert delivered == set(expected_ids)


# --- the request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth, expected",
    [
        ({}, None),
        (
            {"auth": "basic", "username": "hooks", "password": "s3cr:et"},
            "Basic " + base64.b64encode(b"hooks:s3cr:et").decode(),
        ),
        ({"auth": "bearer", "token": "tok-123"}, "Bearer tok-123"),
    ],
)
def test_batches_are_sparkpost_shaped_with_headers_and_auth(
    sqlite_url, opened, dispatch, receiver, auth, expected
):
    store = opened(sqlite_url)
    events = [ev(1, "injection"), ev(2, "open"), ev(3, "click"), ev(4, "link_unsubscribe")]
    store.record(events)
    dispatch(store, [hook(receiver.url("/in/sp?src=milter"), **auth)])
    receiver.wait_until(lambda: len(receiver.received) == 1)
    (got,) = receiver.received
    assert got.path == "/in/sp?src=milter"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("smtpapi-milter/")
    assert uuid.UUID(got.batch_id)
    assert got.headers.get("authorization") == expected
    assert "x-smtpapi-signature" not in got.headers
    assert json.loads(got.body) == [envelope(e) for e in events]
    assert [list(item["msys"]) for item in json.loads(got.body)] == [
        ["message_event"],
        ["track_event"],
        ["track_event"],
        ["unsubscribe_event"],
    ]


def test_hmac_signature_verifies(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    store.record([ev(1), ev(2, "open")])
    dispatch(store, [hook(receiver.url(), hmac_secret="k3y-ü")])
    receiver.wait_until(lambda: len(receiver.received) == 1)
    got = receiver.received[0]
    scheme, _, digest = got.headers["x-smtpapi-signature"].partition("=")
    assert scheme == "sha256"
    mine = hmac.new("k3y-ü".encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(digest, mine)
    other = hmac.new(b"wrong", got.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(digest, other)


def test_events_filter_and_the_cursor_moves_past_unwanted_events(
    sqlite_url, opened, dispatch, receiver
):
    store = opened(sqlite_url)
    kinds = ["injection", "click", "open", "click", "injection", "initial_open"]
    store.record([ev(n, kind) for n, kind in enumerate(kinds)])
    clicks = hook(receiver.url("/clicks"), events=["click"])
    dispatcher = dispatch(store, [clicks, hook(receiver.url("/all"))])
    receiver.wait_until(lambda: len(receiver.requests("/all")) == 1)
    receiver.wait_until(lambda: len(receiver.requests("/clicks")) == 1)
    assert receiver.delivered_ids("/clicks") == ["click-1", "click-3"]
    assert len(receiver.delivered_ids("/all")) == 6
    # Unwanted events at the end are skipped over in the store, not re-read forever.
    store.record([ev(9, "open")])
    wait_for(lambda: read_cursor(store, endpoint_key(clicks))["delivered_id"] == 7)
    assert dispatcher.stats()[f"http://127.0.0.1:{receiver.port}/clicks"].events_delivered == 2


def test_unknown_types_and_shared_identities_are_refused(sqlite_url, opened):
    store = opened(sqlite_url)
    with pytest.raises(ValueError, match=r"webhooks\[0\].events: unknown \['clicks'\]"):
        WebhookDispatcher(store, [hook("http://x/", events=["clicks"])])
    with pytest.raises(ValueError, match="give them different 'name's"):
        WebhookDispatcher(store, [hook("http://x/"), hook("http://x/", events=["open"])])
    with pytest.raises(ValueError, match="give them different 'name's"):
        WebhookDispatcher(store, [hook("http://x/?to=a"), hook("http://x/?to=b")])
    WebhookDispatcher(store, [hook("http://x/", name="a"), hook("http://x/", name="b")])
    assert "t0ken" not in endpoint_key(hook("https://x/h?key=t0ken"))


def test_batches_never_exceed_max_batch(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    store.record([ev(n) for n in range(25)])
    tuning = DeliveryTuning(**{**FAST.__dict__, "max_batch": 10})
    dispatch(store, [hook(receiver.url())], tuning=tuning)
    receiver.wait_until(lambda: len(receiver.delivered_ids()) == 25)
    assert [len(r.event_ids()) for r in receiver.received] == [10, 10, 5]
    assert receiver.delivered_ids() == [f"click-{n}" for n in range(25)]


def test_a_new_endpoint_starts_after_the_events_already_stored(
    sqlite_url, opened, dispatch, receiver
):
    store = opened(sqlite_url)
    store.record([ev(n) for n in range(5)])
    tuning = DeliveryTuning(**{**FAST.__dict__, "start_at": "latest"})
    dispatcher = dispatch(store, [hook(receiver.url())], tuning=tuning)
    wait_for(lambda: all(s.holds_lease for s in dispatcher.stats().values()))
    store.record([ev(n) for n in range(5, 7)])
    receiver.wait_until(lambda: len(receiver.delivered_ids()) >= 2)
    assert receiver.delivered_ids() == ["click-5", "click-6"]


def test_notify_delivers_without_waiting_for_the_poll(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    tuning = DeliveryTuning(**{**FAST.__dict__, "poll_interval": 60.0})
    dispatcher = dispatch(store, [hook(receiver.url())], tuning=tuning)
    store.record([ev(1)])
    dispatcher.notify()
    receiver.wait_until(lambda: receiver.delivered_ids() == ["click-1"], timeout=5)
    store.record([ev(2)])
    dispatcher.notify()
    receiver.wait_until(lambda: len(receiver.delivered_ids()) == 2, timeout=5)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- failures --------------------------------------------------------------------------------


def test_a_failing_receiver_gets_everything_once_it_recovers(store_url, opened, dispatch, receiver):
    store = opened(store_url)
    receiver.default = 500
    tuning = DeliveryTuning(**{**FAST.__dict__, "max_batch": 7})
    dispatcher = dispatch(store, [hook(receiver.url())], tuning=tuning)
    store.record([ev(n) for n in range(10)])
    receiver.wait_until(lambda: len(receiver.received) >= 4)
    store.record([ev(n) for n in range(10, 30)])
    receiver.default = 200
    receiver.wait_until(lambda: len(set(receiver.delivered_ids())) == 30)
    assert_batch_contract(receiver.received, [f"click-{n}" for n in range(30)])
    assert len(by_batch(receiver.received)[receiver.received[0].batch_id]) >= 4
    stats = next(iter(dispatcher.stats().values()))
    wait_for(lambda: stats.events_delivered == 30)
    assert stats.batches_failed >= 3 and stats.batches_given_up == 0


def test_a_stopped_dispatcher_resumes_from_the_stored_cursor(store_url, opened, dispatch, receiver):
    first = opened(store_url)
    first.record([ev(n) for n in range(40)])
    receiver.answer_next([200, 200, HANG])
    tuning = DeliveryTuning(**{**FAST.__dict__, "max_batch": 10, "timeout": 30.0})
    endpoint = hook(receiver.url())
    dispatcher = dispatch(first, [endpoint], tuning=tuning)
    receiver.wait_until(lambda: len(receiver.received) == 3)
    began = time.monotonic()
    assert dispatcher.stop(5.0)
    assert time.monotonic() - began < 2.0, "stop() waited for the hanging receiver"
    cut = receiver.received[2]
    assert read_cursor(first, endpoint_key(endpoint))["batch_id"] == cut.batch_id

    second = opened(store_url)  # a restarted tracker: a new process, same store
    dispatch(second, [endpoint], tuning=tuning)
    receiver.wait_until(lambda: len(set(receiver.delivered_ids())) == 40)
    resent = receiver.received[3]
    assert (resent.batch_id, resent.body) == (cut.batch_id, cut.body)
    assert_batch_contract(receiver.received, [f"click-{n}" for n in range(40)])


def test_a_hanging_receiver_is_cut_at_the_timeout(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    store.record([ev(1)])
    receiver.answer_next([HANG])
    tuning = DeliveryTuning(**{**FAST.__dict__, "timeout": 0.5})
    dispatcher = dispatch(store, [hook(receiver.url())], tuning=tuning)
    receiver.wait_until(lambda: len(receiver.received) == 2)
    hung, retry = receiver.received
    assert 0.5 <= retry.at - hung.at < 1.5
    assert retry.batch_id == hung.batch_id
    assert "timed out" in next(iter(dispatcher.stats().values())).last_error


def test_a_dead_endpoint_does_not_delay_a_healthy_one(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    store.record([ev(0)])
    receiver.default = HANG
    tuning = DeliveryTuning(**{**FAST.__dict__, "timeout": 10.0})
    dead = [hook(receiver.url("/hangs")), hook(f"http://127.0.0.1:{free_port()}/refused")]
    with WebhookReceiver() as healthy:
        dispatcher = dispatch(store, [*dead, hook(healthy.url())], tuning=tuning)
        receiver.wait_until(lambda: len(receiver.received) == 1)  # that POST hangs now
        healthy.wait_until(lambda: healthy.delivered_ids() == ["click-0"])
        began = time.monotonic()
        store.record([ev(n) for n in range(1, 4)])
        dispatcher.notify()
        assert time.monotonic() - began < 0.5, "recording waited for webhooks"
        healthy.wait_until(lambda: len(healthy.delivered_ids()) == 4, timeout=3)
        assert time.monotonic() - began < 3
        refused = dispatcher.stats()[dead[1].url]
        assert refused.batches_failed >= 1 and "ConnectionRefused" in refused.last_error
        began = time.monotonic()
        assert dispatcher.stop(5.0)
        assert time.monotonic() - began < 2.0
    assert len(receiver.received) == 1, "the hanging POST was retried before its timeout"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_given_up_after_the_retry_window(sqlite_url, opened, dispatch, receiver):
    store = opened(sqlite_url)
    clock = FakeClock()
    receiver.default = 503
    store.record([ev(1), ev(2)])
    tuning = DeliveryTuning(**{**FAST.__dict__, "retry_window": 3600.0})
    with capture_logs() as logs:
        dispatcher = dispatch(store, [hook(receiver.url())], tuning=tuning, clock=clock)
        receiver.wait_until(lambda: len(receiver.received) >= 3)
        stats = next(iter(dispatcher.stats().values()))
        assert stats.batches_given_up == 0
        clock.now += 3600
        wait_for(lambda: stats.batches_given_up == 1)
        # The worker counts, then logs: the line may come a moment after the count.
        wait_for(lambda: any("GIVEN UP" in e["event"] for e in logs))
    assert stats.events_given_up == 2
    loud = [e for e in logs if e["log_level"] == "error"]
    assert loud and "GIVEN UP" in loud[0]["event"] and loud[0]["events"] == 2
    receiver.default = 200
    store.record([ev(3, timestamp=str(int(clock.now)))])
    receiver.wait_until(lambda: receiver.delivered_ids() == ["click-3"])


def test_an_old_batch_is_still_tried_once_and_the_window_counts_from_its_events(
    sqlite_url, opened, dispatch, receiver
):
    # A long outage: events older than the window get one attempt, not eight hours more.
    store = opened(sqlite_url)
    old = str(int(time.time()) - 9 * 3600)
    store.record([ev(1, timestamp=old)])
    receiver.answer_next([500])
    dispatcher = dispatch(store, [hook(receiver.url())])
    stats = next(iter(dispatcher.stats().values()))
    wait_for(lambda: stats.batches_given_up == 1)
    assert len(receiver.received) == 1
    store.record([ev(2, timestamp=old)])
    receiver.wait_until(lambda: receiver.delivered_ids() == ["click-2"])


# --- several nodes, one store ----------------------------------------------------------------


def test_two_nodes_on_one_store_take_turns(store_url, opened, dispatch, receiver):
    # A lease long enough that no stall of a loaded machine lets the standby take over (and
    # rightly send the batch in flight again) while the leader still delivers.
    tuning = DeliveryTuning(**{**FAST.__dict__, "max_batch": 5, "lease_seconds": 4.0})
    endpoint = hook(receiver.url(), name="crm")
    nodes = [dispatch(opened(store_url), [endpoint], tuning=tuning) for _ in range(2)]
    writer = opened(store_url)
    writer.record([ev(n) for n in range(30)])
    wait_for(lambda: sum(node.stats()["crm"].events_delivered for node in nodes) == 30)
    assert len(receiver.delivered_ids()) == 30, "an event was sent twice"
    holders = [node for node in nodes if node.stats()["crm"].holds_lease]
    assert len(holders) == 1
    leader, standby = holders[0], next(n for n in nodes if n is not holders[0])
    assert leader.stop(5.0)
    writer.record([ev(n) for n in range(30, 40)])
    receiver.wait_until(lambda: len(set(receiver.delivered_ids())) == 40)
    assert len(receiver.delivered_ids()) == 40
    assert_batch_contract(receiver.received, [f"click-{n}" for n in range(40)])
    assert standby.stats()["crm"].holds_lease
    # The receiver records a POST before answering it: wait for the sender to see the 200.
    wait_for(lambda: standby.stats()["crm"].events_delivered == 10)


def test_delivery_survives_a_postgresql_outage(postgres_running, opened, dispatch, receiver):
    url = postgres_running.create_database(f"w_{uuid.uuid4().hex[:12]}")
    store = opened(url)
    dispatcher = dispatch(store, [hook(receiver.url())])
    store.record([ev(1)])
    receiver.wait_until(lambda: receiver.delivered_ids() == ["click-1"])
    # The receiver records a POST before answering it, and the sender moves its cursor after
    # the 200: stopping PostgreSQL in between would rightly send click-1 again (same batch id).
    wait_for(lambda: next(iter(dispatcher.stats().values())).events_delivered == 1)
    with capture_logs() as logs:
        postgres_running.stop()
        wait_for(lambda: any("store unavailable" in e["event"] for e in logs))
        postgres_running.start()
    store.record([ev(2)])
    dispatcher.notify()
    receiver.wait_until(lambda: receiver.delivered_ids() == ["click-1", "click-2"])


def test_the_cursor_survives_an_upgrade_from_schema_1(store_url, monkeypatch, receiver):
    dialect = schema.POSTGRESQL if store_url.startswith("postgres") else schema.SQLITE
    with monkeypatch.context() as patch:
        patch.setitem(schema.MIGRATIONS, dialect, schema.MIGRATIONS[dialect][:1])
        if dialect == schema.SQLITE:
            sqlite_path(store_url).parent.mkdir(parents=True, exist_ok=True)
        write_version_1(store_url, [ev(1)])
    store = open_store(store_url)
    try:
        dispatcher = WebhookDispatcher(store, [hook(receiver.url())], tuning=FAST)
        dispatcher.start()
        receiver.wait_until(lambda: receiver.delivered_ids() == ["click-1"])
        assert dispatcher.stop(5.0)
    finally:
        store.close()


def test_threads_are_named_and_stop_is_idempotent(sqlite_url, opened):
    store = opened(sqlite_url)
    dispatcher = WebhookDispatcher(store, [hook("http://127.0.0.1:9/x")], tuning=FAST)
    assert dispatcher.stop(1.0)  # never started
    dispatcher = WebhookDispatcher(store, [hook("http://127.0.0.1:9/x")], tuning=FAST)
    dispatcher.start()
    assert any(t.name == "webhook http://127.0.0.1:9/x" for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        dispatcher.start()
    assert dispatcher.stop(5.0) and dispatcher.stop(1.0)


def test_a_webhook_name_comes_from_the_configuration():
    config = parse_config({"webhooks": [{"url": "https://h.example/x?k=1", "name": "crm"}]})
    (configured,) = config.webhooks
    assert endpoint_key(configured) == "name:crm" and endpoint_label(configured) == "crm"
    assert endpoint_label(hook("https://u:p@h.example:8443/in?k=1")) == "https://h.example:8443/in"
