"""CPU per click of the tracker's Python path, in one process, no HTTP server.

The tracker bench (tracker_bench.py) runs on two cores shared by wrk, Granian and the
tracker's workers, so its requests/s move with everything else on the machine. This drives
the public app the tracker serves (the same startup: real journal with its fdatasync, real
SQLite store, the indexer thread) with valid click tokens from ``CONCURRENCY`` concurrent
tasks, the way a worker sees wrk's connections, and reports the process's CPU time (every
thread: the handlers and the loop's journal appends, the indexer) per request. ``--profile`` adds a
cProfile of the event loop thread's share. Not in it: Granian (its ASGI scope and ``send``
calls, its threads handing requests to the loop), the network, wrk; a live worker under wrk
spends about twice this per click. ``--rsgi`` drives the RSGI app the live listener serves
(rsgi.py) with stand-ins for Granian's scope and protocol objects, instead of the ASGI app.

    .venv/bin/python bench/tracker_cpu.py [--requests N] [--profile] [--loop asyncio] [--rsgi]
    SMTPAPI_MILTER_SOURCE=/tmp/old/milter .venv/bin/python bench/tracker_cpu.py  # before
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# SMTPAPI_MILTER_SOURCE: another checkout's milter/ (an older commit, for a before/after).
sys.path[:0] = [str(ROOT), os.environ.get("SMTPAPI_MILTER_SOURCE", str(ROOT / "milter"))]

from smtpapi_milter.config import load_config  # noqa: E402
from smtpapi_milter.events.journal import backlog  # noqa: E402
from smtpapi_milter.tokens import TokenCodec, TrackingData  # noqa: E402
from smtpapi_milter.tracker import server  # noqa: E402
from tests.harness.smtpapi import toml  # noqa: E402

CONCURRENCY = 64  # tracker_bench.py's wrk connections
AGENT = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
LINKS = 25  # per copy, as the newsletter the tracker bench mints from
# tracker_bench.py's NORMAL_CLICKS: the guard checks every request and folds none.
GUARD = {"flood_window": 0.001, "flood_token_hourly_limit": 1_000_000_000}


def click_paths(codec: TokenCodec, recipients: int) -> list[bytes]:
    """Raw paths of the click links of ``recipients`` copies of a newsletter."""
    paths = []
    now = int(time.time()) - 3600
    for n in range(recipients):
        base = TrackingData(
            kind="click",
            transmission_id=str(7_000_000_000_000 + n),
            message_id=f"0001{n:012d}",
            rcpt_to=f"reader{n}@example.org",
            injection_time=now,
            campaign_id="spring-newsletter",
            tags=("newsletter",),
            metadata={"list": "weekly"},
        )
        tokens = codec.click_tokens(base)
        for link in range(LINKS):
            url = f"https://www.example.com/articles/{link}?utm_source=newsletter&utm_medium=email"
            paths.append(b"/c/" + tokens.encode(url).encode())
    return paths


def asgi_scope(path: bytes) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", AGENT), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
    }


class RsgiScope:
    """What rsgi.py reads of Granian's RSGI scope (its headers are a mapping of text)."""

    __slots__ = ("client", "headers", "method", "path")

    def __init__(self, path: bytes):
        self.path = path.decode("latin-1")
        self.method = "GET"
        self.client = "127.0.0.1:40000"
        self.headers = {"host": "127.0.0.1:8080", "user-agent": AGENT.decode(), "accept": "*/*"}


class RsgiProtocol:
    """Granian's response calls, counting the statuses."""

    def __init__(self, statuses: dict[int, int]):
        self.statuses = statuses

    def response_empty(self, status: int, headers: list) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def drive_rsgi(tracker, scopes: list[RsgiScope], requests: int) -> dict[int, int]:
    """:func:`drive` through the RSGI app."""
    statuses: dict[int, int] = {}
    protocol = RsgiProtocol(statuses)
    tracker.app.loop = asyncio.get_running_loop()  # what __rsgi_init__ gives a worker's app

    async def worker(first: int) -> None:
        for i in range(first, requests, CONCURRENCY):
            await tracker.__rsgi__(scopes[i % len(scopes)], protocol)

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return statuses


async def drive(app, scopes: list[dict], requests: int) -> dict[int, int]:
    """``requests`` clicks from ``CONCURRENCY`` tasks; the response statuses counted."""
    statuses: dict[int, int] = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def worker(first: int) -> None:
        for i in range(first, requests, CONCURRENCY):
            await app(scopes[i % len(scopes)], receive, send)

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return statuses


def wait_indexed(config, store, seconds: float) -> None:
    """Until the indexer thread (the in-process one: no indexer process here) has stored
    every journaled click."""
    directory = server.journal_directory(config)
    deadline = time.monotonic() + seconds
    while backlog(directory, store) and time.monotonic() < deadline:
        time.sleep(0.05)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by its Python name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        name = names.get(int(task.name), f"thread {task.name}")
        times[name] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the server's: uvloop"
    )
    parser.add_argument("--rsgi", action="store_true", help="drive the RSGI app, not ASGI's")
    args = parser.parse_args()
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    with tempfile.TemporaryDirectory(prefix="tracker-cpu-") as tmp:
        work = Path(tmp)
        config_path = work / "smtpapi-milter.toml"
        config_path.write_text(
            toml({"engagement_tracker": GUARD}, {"state_dir": str(work / "state")})
        )
        config = load_config(str(config_path))
        server.prepare(config)
        paths = click_paths(TokenCodec.from_config(config), 250)
        if args.rsgi:
            tracker = server.tracker_rsgi_app(config)
            tracker._start()  # what the worker loop's first callback does
            app = tracker.app
            scopes = [RsgiScope(path) for path in paths]
            go = drive_rsgi
        else:
            tracker = server.tracker_app(config)
            app = tracker.app = tracker._startup()  # what ASGI lifespan startup does
            scopes = [asgi_scope(path) for path in paths]
            go = drive
        run(go(tracker if args.rsgi else app, scopes, 2000))  # warm: caches, journal, store
        wait_indexed(config, app.recorder.store, 60)
        # The harness's own long-lived objects (thousands of scopes) are not the tracker's:
        # left to the cyclic GC, every full collection would traverse them.
        gc.freeze()
        profiler = cProfile.Profile() if args.profile else None
        cpu, wall, threads = time.process_time(), time.perf_counter(), thread_cpu()
        if profiler:
            profiler.enable()
        statuses = run(go(tracker if args.rsgi else app, scopes, args.requests))
        if profiler:
            profiler.disable()
        answered = time.process_time() - cpu
        wait_indexed(config, app.recorder.store, 120)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        threads = {name: t - threads.get(name, 0.0) for name, t in thread_cpu().items()}
        tracker._shutdown()
        per = 1e6 / args.requests
        print(
            f"{args.requests} clicks {statuses}: CPU {cpu * per:.1f} us/click with indexing "
            f"({answered * per:.1f} until the last answer), wall {wall:.2f} s, "
            f"pid {os.getpid()}"
        )
        recorder = app.recorder
        print(f"  {recorder.stored / max(recorder.groups, 1):.1f} events per journal flush")
        shares = ", ".join(f"{name} {t * per:.1f} us" for name, t in threads.items())
        print(f"  by thread: {shares}")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    sys.exit(main())
