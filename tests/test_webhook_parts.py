"""The parts under webhook delivery: the stored cursor and lease, and one POST.

The cursor runs against SQLite and a real PostgreSQL; the POST against loopback servers that
answer slowly or oddly on purpose.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpapi_milter.config import WebhookConfig
from smtpapi_milter.events import schema
from smtpapi_milter.events.store import EventStore, open_store
from smtpapi_milter.events.webhook_cursor import EndpointCursor, InFlight, LeaseLost, read_cursor
from smtpapi_milter.events.webhook_http import Poster, batch_body, request_headers
from smtpapi_milter.events.webhooks import DeliveryTuning, WebhookDispatcher

from .harness.webhook_receiver import WebhookReceiver
from .test_webhooks import FAST, ev, wait_for

LEASE = 30.0


@pytest.fixture(params=[schema.SQLITE, schema.POSTGRESQL])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == schema.SQLITE:
        url = f"sqlite://{tmp_path}/events.sqlite3"
    else:
        url = request.getfixturevalue("postgres").create_database(f"c_{uuid.uuid4().hex[:12]}")
    opened = open_store(url)
    yield opened
    opened.close()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def cursor(store: EventStore, owner: str, clock: Clock) -> EndpointCursor:
    return EndpointCursor(store, "name:crm", "crm", owner, lease_seconds=LEASE, clock=clock)


# --- cursor and lease ------------------------------------------------------------------------


def test_one_owner_at_a_time_and_a_stale_owner_is_fenced_off(store):
    clock = Clock()
    node_a, node_b = cursor(store, "a", clock), cursor(store, "b", clock)
    state = node_a.acquire(start_at_latest=False)
    assert state is not None and state.delivered_id == 0 and state.batch is None
    assert node_b.acquire(start_at_latest=False) is None
    clock.now += LEASE - 1
    node_a.renew()  # pushes the expiry out again
    clock.now += LEASE - 1
    assert node_b.acquire(start_at_latest=False) is None
    flight = InFlight(str(uuid.uuid4()), 7, ("click",), clock.now)
    node_a.begin(0, flight)

    clock.now += LEASE + 1  # node a went quiet: its lease ran out
    taken = node_b.acquire(start_at_latest=False)
    assert taken is not None and taken.batch == flight, "the batch in flight is handed over"
    for stale_write in (node_a.renew, lambda: node_a.finish(flight)):
        with pytest.raises(LeaseLost):
            stale_write()
    node_b.finish(flight)
    assert read_cursor(store, "name:crm")["delivered_id"] == 7
    node_b.release()
    assert node_a.acquire(start_at_latest=False) is not None, "a released lease is free at once"


def test_cursor_writes_check_the_state_they_expect(store):
    clock = Clock()
    node = cursor(store, "a", clock)
    node.acquire(start_at_latest=False)
    node.advance(0, 3)
    with pytest.raises(LeaseLost):
        node.advance(0, 5)  # not where the cursor is any more
    flight = InFlight("b-1", 9, None, clock.now)
    node.begin(3, flight)
    with pytest.raises(LeaseLost):
        node.begin(3, InFlight("b-2", 12, None, clock.now))  # one batch in flight at a time
    with pytest.raises(LeaseLost):
        node.finish(InFlight("b-other", 9, None, clock.now))
    state = node.acquire(start_at_latest=False)
    assert state is not None and (state.delivered_id, state.batch) == (3, flight)


def test_a_new_endpoint_starts_at_the_newest_event_or_the_first(store):
    store.record([ev(n) for n in range(4)])
    newest = store.query_with_ids()[-1][0]
    clock = Clock()
    latest = EndpointCursor(store, "url:1", "x", "a", lease_seconds=LEASE, clock=clock)
    assert latest.acquire(start_at_latest=True).delivered_id == newest
    earliest = EndpointCursor(store, "url:2", "y", "a", lease_seconds=LEASE, clock=clock)
    assert earliest.acquire(start_at_latest=False).delivered_id == 0
    store.record([ev(9)])
    assert latest.acquire(start_at_latest=True).delivered_id == newest, "set once, then kept"


def test_a_batch_in_flight_is_rebuilt_with_its_own_filter(store, tmp_path):
    # The filter changed between the crash and the restart: the batch in flight is re-sent
    # as it was (same events), and the new filter applies from the next batch on.
    store.record([ev(1, "click"), ev(2, "open"), ev(3, "click")])
    last = store.query_with_ids()[-1][0]
    clock = Clock()
    node = EndpointCursor(store, "name:crm", "crm", "crashed", lease_seconds=1, clock=clock)
    node.acquire(start_at_latest=False)
    node.begin(0, InFlight("batch-1", last, ("click",), time.time()))
    store.record([ev(4, "open"), ev(5, "click")])
    with WebhookReceiver() as rx:
        endpoint = WebhookConfig(url=rx.url(), name="crm", events=["open"])
        dispatcher = WebhookDispatcher(store, [endpoint], tuning=FAST)
        dispatcher.start()
        try:
            rx.wait_until(lambda: len(rx.received) == 2)
        finally:
            assert dispatcher.stop(5.0)
    first, second = rx.received
    assert (first.batch_id, first.event_ids()) == ("batch-1", ["click-1", "click-3"])
    assert second.event_ids() == ["open-4"]


def test_concurrent_writers_and_delivery_miss_nothing(store):
    # Writers on stores of their own, as tracker nodes are: on PostgreSQL ids become visible
    # out of order, and the cursor must still see every event exactly once.
    def write(t: int) -> None:
        node = open_store(store.url)
        try:
            for i in range(40):
                node.record([ev(t * 100 + i)])
        finally:
            node.close()

    with WebhookReceiver() as rx:
        tuning = DeliveryTuning(**{**FAST.__dict__, "max_batch": 15})
        dispatcher = WebhookDispatcher(store, [WebhookConfig(url=rx.url())], tuning=tuning)
        dispatcher.start()
        try:
            writers = [threading.Thread(target=write, args=(t,)) for t in range(4)]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
            stats = next(iter(dispatcher.stats().values()))
            wait_for(lambda: stats.events_delivered == 160)
        finally:
            assert dispatcher.stop(5.0)
        expected = sorted(f"click-{t * 100 + i}" for t in range(4) for i in range(40))
        assert sorted(rx.delivered_ids()) == expected


# --- one POST --------------------------------------------------------------------------------


def test_only_a_2xx_answer_counts():
    with WebhookReceiver() as rx:
        rx.answer_next([204, 302, 404, 500])
        poster = Poster(rx.url(), timeout=2.0)
        body = batch_body([ev(1)])
        headers = request_headers(WebhookConfig(url=rx.url()), "b", body)
        results = [poster.post(body, headers) for _ in range(4)]
    assert [(r.status, r.ok) for r in results] == [
        (204, True),
        (302, False),
        (404, False),
        (500, False),
    ]


def test_a_trickling_receiver_is_cut_at_the_total_timeout():
    # Each byte comes well within the socket timeout; only a deadline on the whole
    # exchange stops this answer from taking far longer than the timeout.
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        began = time.monotonic()
        result = Poster(url, timeout=0.5).post(b"[]", {"Content-Type": "application/json"})
        spent = time.monotonic() - began
    finally:
        stop.set()
        thread.join()
        server.close()
    assert not result.ok and result.status is None
    assert 0.5 <= spent < 1.0, spent
    assert result.detail == "timed out"


def test_an_aborted_poster_refuses_further_posts():
    poster = Poster("http://127.0.0.1:9/", timeout=1.0)
    poster.abort()
    assert poster.post(b"[]", {}).detail == "aborted"
