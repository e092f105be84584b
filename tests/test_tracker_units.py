"""Tracker pieces without a server: Location headers, client addresses, agents, queries."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpapi_milter.events.query import EventQuery, QueryError, parse_time, parse_types
from smtpapi_milter.events.store import LazyStore, StoreUnavailable, open_store
from smtpapi_milter.ids import unique_event_id
from smtpapi_milter.tokens import TrackingData
from smtpapi_milter.tracker import flood
from smtpapi_milter.tracker.app import ClientAddress, location
from smtpapi_milter.tracker.flood import FloodGuard
from smtpapi_milter.tracker.recorder import EventRecorder, RecorderStopped
from smtpapi_milter.tracker.useragent import is_machine, user_agent_parsed

T0 = 1_700_000_000


def test_location_keeps_ascii_urls_and_encodes_the_rest():
    url = "https://example.com/p?x=1&y=%20a,b!c@d'(e)[f]"
    assert location(url) == url.encode()
    assert location("https://example.com/café/😀 x") == (
        b"https://example.com/caf%C3%A9/%F0%9F%98%80%20x"
    )


@given(st.text())
def test_location_is_always_a_safe_header_value(url):
    value = location(url)
    assert all(0x21 <= b < 0x7F for b in value)  # no CR, LF, space or 8-bit


def scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    plain = ClientAddress([])
    assert plain(scope("203.0.113.9", "1.2.3.4")) == "203.0.113.9"
    behind = ClientAddress(["10.0.0.0/8"])
    assert behind(scope("10.0.0.5", "198.51.100.7, 10.0.0.9")) == "198.51.100.7"
    assert behind(scope("10.0.0.5", "6.6.6.6, 198.51.100.7")) == "198.51.100.7"  # forged left
    assert behind(scope("203.0.113.9", "1.2.3.4")) == "203.0.113.9"  # not from a proxy
    assert behind(scope("10.0.0.5")) == "10.0.0.5"
    # A hop that is no address ends the walk: the connecting proxy is all we know.
    assert behind(scope("10.0.0.5", "evil.example")) == "10.0.0.5"
    assert behind(scope("10.0.0.5", "198.51.100.7, unknown, 10.0.0.9")) == "10.0.0.5"
    assert behind(scope("10.0.0.5", "2001:DB8::1")) == "2001:db8::1"  # in canonical form


@pytest.mark.parametrize(
    ("agent", "prefetched", "proxy", "bot"),
    [
        ("Mozilla/5.0", True, True, False),  # Apple Mail Privacy Protection
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
            "GoogleImageProxy)",
            False,
            True,
            False,
        ),
        (
            "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
            True,
            True,
            False,
        ),
        ("curl/8.5.0", False, False, True),
        ("", False, False, True),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", False, False, True),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148",
            False,
            False,
            False,
        ),
    ],
)
def test_machines_are_told_from_people(agent, prefetched, proxy, bot):
    parsed = user_agent_parsed(agent, "open", T0, T0 + 3600)
    assert (parsed["is_prefetched"], parsed["is_proxy"], parsed["is_bot"]) == (
        prefetched,
        proxy,
        bot,
    )
    assert is_machine(parsed) == (prefetched or bot)


def test_iphone_is_mobile_and_a_click_seconds_after_injection_is_a_scanner():
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15"
    assert user_agent_parsed(iphone, "open", T0, T0 + 60)["is_mobile"] is True
    fast = user_agent_parsed(iphone, "click", T0, T0 + 1)
    assert fast["is_bot"] and fast["machine_reason"] == "click_too_fast"
    assert not user_agent_parsed(iphone, "click", T0, T0 + 60)["is_bot"]


def test_time_filters():
    assert parse_time("1700000000") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000  # no zone: UTC
    assert parse_time("2023-11-14") == 1_699_920_000
    assert parse_time("2h", now=T0) == T0 - 7200
    assert parse_time("7d", now=T0) == T0 - 7 * 86400
    with pytest.raises(QueryError, match="yesterday"):
        parse_time("yesterday")
    assert parse_types(["click,open", "injection"]) == ["click", "open", "injection"]
    with pytest.raises(QueryError, match="clicks"):
        parse_types(["clicks"])
    with pytest.raises(QueryError, match="limit"):
        EventQuery.from_text(limit="0")


def test_event_ids_are_unique_and_time_ordered():
    ids = [unique_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert [int(i) >> 80 for i in ids] == sorted(int(i) >> 80 for i in ids)


def event(n: int) -> dict:
    return {"type": "open", "event_id": f"e{n}", "timestamp": str(T0 + n)}


def test_recorder_group_commits_concurrent_requests(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store).start()

    async def many() -> None:
        await asyncio.gather(*(recorder.record([event(n)]) for n in range(500)))

    asyncio.run(many())
    recorder.stop()
    assert len(store.query()) == 500
    assert recorder.groups < 500  # requests shared flushes
    with pytest.raises(RecorderStopped):
        asyncio.run(recorder.record([event(999)]))
    store.close()


def test_recorder_paces_flushes_under_load_but_not_the_first_after_idle(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store, commit_delay=0.5).start()

    async def timed(n: int, after: float = 0.0) -> float:
        await asyncio.sleep(after)
        started = time.monotonic()
        await recorder.record([event(n)])
        return time.monotonic() - started

    async def load() -> tuple[float, list[float]]:
        first = await timed(0)
        # Five requests 20 ms apart, right after that flush: they wait for the next one.
        return first, await asyncio.gather(*(timed(n, 0.02 * n) for n in range(1, 6)))

    first, paced = asyncio.run(load())
    assert first < 0.25  # the first after idle is flushed at once
    assert recorder.groups == 2  # the five shared one flush, due 0.5 s after the first's
    assert max(paced) > 0.3
    time.sleep(0.6)  # idle again
    assert asyncio.run(timed(6)) < 0.25 and recorder.groups == 3
    recorder.stop()
    assert len(store.query()) == 7
    store.close()


def test_recorder_flushes_a_full_group_without_waiting_for_its_pace(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store, max_group=3, commit_delay=30).start()

    async def later(n: int, after: float) -> None:
        await asyncio.sleep(after)
        await recorder.record([event(n)])

    async def load() -> None:
        await recorder.record([event(0)])
        # The writer paces a group of one, then two more fill it.
        await asyncio.gather(later(1, 0), later(2, 0.2), later(3, 0.2))

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(load(), 10))
    assert time.monotonic() - started < 5 and recorder.groups == 2
    recorder.stop()
    store.close()


def test_recorder_reports_a_store_that_is_down(tmp_path):
    recorder = EventRecorder(LazyStore("postgresql://127.0.0.1:1/x")).start()
    with pytest.raises(StoreUnavailable):
        asyncio.run(recorder.record([event(1)]))
    recorder.stop()


def test_lazy_store_opens_when_the_store_comes_back(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the store's directory must go")
    clock = [0.0]
    lazy = LazyStore(f"sqlite://{blocker}/events.sqlite3", clock=lambda: clock[0])
    with pytest.raises(StoreUnavailable):
        lazy.ping()
    blocker.unlink()
    with pytest.raises(StoreUnavailable):
        lazy.ping()  # within the retry interval: not tried again yet
    clock[0] = 5.0
    lazy.ping()
    lazy.record([event(1)])
    assert len(lazy.get().query()) == 1
    lazy.close()


def test_recorder_wakes_waiters_in_every_event_loop(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    recorder = EventRecorder(store).start()
    errors: list[BaseException] = []

    def loop_thread(base: int) -> None:
        try:
            asyncio.run(asyncio.wait_for(recorder.record([event(base)]), 10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop_thread, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.stop()
    assert errors == [] and len(store.query()) == 8
    store.close()


def test_sqlite_synchronous_is_full_unless_the_url_says_normal(tmp_path):
    full = open_store(f"sqlite://{tmp_path}/a.sqlite3")
    normal = open_store(f"sqlite://{tmp_path}/b.sqlite3?synchronous=normal")
    assert (full.synchronous, normal.synchronous) == ("FULL", "NORMAL")
    assert normal.path == tmp_path / "b.sqlite3"
    with pytest.raises(ValueError, match="synchronous"):
        open_store(f"sqlite://{tmp_path}/c.sqlite3?synchronous=off")
    full.close()
    normal.close()


def flood_data(n: int = 0, target: str = "https://x.org/") -> TrackingData:
    return TrackingData("click", "t", f"m{n}", "a@example.org", 1, target_url=target)


def test_flood_guard_folds_repeats_per_client_and_window():
    guard = FloodGuard(window=60, hourly_limit=0)
    link, now = flood_data(), 7200.0
    assert guard.check(link, "198.51.100.7", now) is None
    folded = guard.check(link, "198.51.100.7", now + 59)
    assert folded is not None and folded.folded == 1 and folded.abused_at is None
    assert guard.check(link, "198.51.100.8", now + 59) is None  # another client
    assert guard.check(flood_data(1), "198.51.100.7", now + 59) is None  # another link
    assert guard.check(link, "198.51.100.7", now + 61) is None  # the window has passed
    # An IPv6 client is its /64: other addresses of the same allocation are the same client.
    assert guard.check(link, "2001:db8:1:2::1", now) is None
    assert guard.check(link, "2001:db8:1:2:ffff::9", now + 1) is not None
    assert guard.check(link, "2001:db8:1:3::1", now + 1) is None


def test_flood_guard_hourly_limit_flags_and_starts_again_each_hour():
    guard = FloodGuard(window=0, hourly_limit=3)
    link, hour = flood_data(), 3600.0 * 10
    stored = [guard.check(link, f"203.0.113.{n}", hour + n) is None for n in range(6)]
    assert stored == [True, True, True, False, False, False]
    # More requests than the limit came in this hour: every fold carries the flag.
    assert guard.check(link, "203.0.113.99", hour + 10).abused_at == hour + 10
    assert guard.check(link, "203.0.113.100", hour + 3600) is None  # a new clock hour


def test_flood_guard_forgets_a_store_that_failed():
    guard = FloodGuard(window=60, hourly_limit=1)
    link = flood_data()
    assert guard.check(link, "198.51.100.7", 100.0) is None
    guard.release(link, "198.51.100.7")  # the store refused: the retry must be stored
    assert guard.check(link, "198.51.100.7", 101.0) is None


def test_flood_guard_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(flood, "MAX_RECENT", 10)
    monkeypatch.setattr(flood, "MAX_TOKENS", 10)
    guard = FloodGuard(window=60, hourly_limit=5)
    for n in range(100):
        assert guard.check(flood_data(n), "198.51.100.7", 100.0 + n / 100) is None
    assert len(guard._recent) <= 10 and len(guard._tokens) <= 10
