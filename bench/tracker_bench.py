"""Click redirects with durable events vs a bare app under the same server (SPEC 11).

Same machine, same load generator (wrk, one thread, the same connections and the same list
of request paths), alternating runs in one go: nginx's static 302 (one worker), the floor
(bench/bare_granian.py: a bare Python app under Granian with the tracker's worker count,
answering a fixed 302 with no token and no event, through each of Granian's Python
interfaces, the fastest counted), and the tracker with default settings (every event durable
before its 302 is sent). Bars: ours >= 0.4 x the floor's requests/s (nginx reported beside
it), every answered click stored (events stored = responses counted by the tracker, and at
least what wrk received), and p99 <= 10 ms at half our peak rate (wrk with a per-connection
delay to hold the rate).

The flood guard checks every request, but the benchmark's clicks cycle through a few thousand
links from one client, so it runs with a window and an hourly limit that never fold them:
what is measured is the normal click path. A last run replays one link (the flood the guard
is for) against the default settings: every request still redirected, the store bounded.
"""

from __future__ import annotations

import argparse
import email
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from bars import bar  # noqa: E402
from smtpapi_milter.cli import rewrite_bytes  # noqa: E402
from smtpapi_milter.config import load_config  # noqa: E402
from smtpapi_milter.pipeline import Pipeline  # noqa: E402
from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_port  # noqa: E402
from tests import corpus  # noqa: E402
from tests.harness.smtpapi import RunningTracker  # noqa: E402

CONNECTIONS = 64
FLOOR_BAR = 0.4  # the issue's bar (SPEC 11's table says 0.5)
# (interface, in a session of its own). The tracker runs in a session of its own
# (RunningTracker's start_new_session, so that stopping it reaches all its processes), and
# Linux's autogroup scheduling (kernel.sched_autogroup_enabled = 1 here) makes each session
# a group the scheduler shares the CPU between; wrk runs in this script's session. The bare
# floor answered 28.1k/s in this session and 22.5k/s in its own (4 rounds alternating,
# medians); the tracker 8.9k/s in this session and 8.6k/s in its own. So the floor is also
# measured in a session of its own, under the tracker's arrangement, and reported; the
# verdict stays against the fastest floor of all.
FLOORS = (("rsgi", False), ("asgi", False), ("rsgi", True))
OWN_SESSION = ", own session"
AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{
    listen 127.0.0.1:{port};
    location / {{
      add_header Cache-Control no-store always;
      add_header Referrer-Policy no-referrer always;
      return 302 https://www.example.com/articles/1?utm_source=newsletter&utm_medium=email;
    }}
  }}
}}
"""
WRK_SCRIPT = """
paths = {{{paths}}}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {{["User-Agent"] = "{agent}"}})
end
{delay}
"""


def click_paths(tracker: RunningTracker, recipients: int) -> list[str]:
    """Every click path of a realistic newsletter sent to ``recipients`` people."""
    pipeline = Pipeline(load_config(str(tracker.config_path)))
    html = corpus.realistic(max(corpus.html_files(), key=lambda p: p.stat().st_size).read_bytes())
    message = corpus.wrap_html(html, "8bit")
    pattern = re.compile(rf"{re.escape(tracker.base_url)}(/c/[A-Za-z0-9_-]+)")
    paths = []
    for n in range(recipients):
        out = rewrite_bytes(pipeline, message, rcpt=f"reader{n}@example.org")
        body = email.message_from_bytes(out).get_payload(decode=True).decode()
        paths += pattern.findall(body)
    return paths


def wrk(url: str, script: Path, seconds: int, connections: int = CONNECTIONS) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": int(m.group(1))
        if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out))
        else 0,
    }
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return result


def write_script(path: Path, paths: list[str], rate: float | None = None) -> Path:
    delay = ""
    if rate:  # each connection waits so that all of them together make ``rate`` per second
        delay = f"delay = function() return {1000.0 * CONNECTIONS / rate:.3f} end"
    listed = ",".join(f'"{p}"' for p in paths)
    path.write_text(WRK_SCRIPT.format(paths=listed, agent=AGENT, delay=delay))
    return path


def stored_events(tracker: RunningTracker) -> int:
    db = tracker.workdir / "state" / "events.sqlite3"  # both variants keep it there
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE type = 'click'").fetchone()[0]


def counted_by_tracker(tracker: RunningTracker) -> int:
    request = urllib.request.Request(tracker.admin_url + "/metrics", headers=tracker.admin_headers)
    with urllib.request.urlopen(request) as response:
        text = response.read().decode()
    match = re.search(r'requests_total\{kind="click",outcome="stored"\} ([\d.e+]+)', text)
    return int(float(match.group(1))) if match else 0


def settled_counts(tracker: RunningTracker, seconds: float = 10.0) -> tuple[int, int]:
    """(stored, counted) once two readings in a row agree.

    When wrk stops, requests it already sent are still being answered (each is stored, then
    counted), so one early reading of each can differ by the stragglers. Stable readings, not
    equal ones, are waited for: a real loss shows as a lasting difference.
    """
    deadline = time.monotonic() + seconds
    last = (stored_events(tracker), counted_by_tracker(tracker))
    while True:
        time.sleep(0.2)
        now = (stored_events(tracker), counted_by_tracker(tracker))
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def indexing_lag(tracker: RunningTracker, seconds: float = 30.0) -> tuple[int, float]:
    """Right after a run: (clicks answered but not yet in the store, seconds until they are).
    The store is filled from the journals by the indexer (events/journal_indexer.py), which
    yields the CPU to the answers: how far behind it fell under the load shows here."""
    started = time.monotonic()
    behind = counted_by_tracker(tracker) - stored_events(tracker)
    while stored_events(tracker) < counted_by_tracker(tracker):
        if time.monotonic() - started > seconds:
            break
        time.sleep(0.05)
    return behind, time.monotonic() - started


# The guard on, but never folding the benchmark's cycling links (see the docstring).
NORMAL_CLICKS = {"flood_window": 0.001, "flood_token_hourly_limit": 1_000_000_000}
FLOOD_SECONDS = 5

VARIANTS = {
    # name: [events] store (None: the default, an fsync per group commit). Measured once
    # beside the default, "?synchronous=normal" (no fsync per commit) was no faster: the
    # tracker is bound by CPU, not by the flush, so only the default is measured.
    "ours": None,
}


class Floor:
    """bench/bare_granian.py under Granian, one server per interface, ``workers`` workers."""

    def __init__(self, workers: int):
        self.workers = workers
        self.urls: dict[str, str] = {}
        self._servers: list[subprocess.Popen] = []

    def __enter__(self) -> Floor:
        granian = str(Path(sys.executable).with_name("granian"))
        for interface, own_session in FLOORS:
            port = free_port()
            command = [granian, "--interface", interface, "--workers", str(self.workers)]
            command += ["--http", "1", "--no-ws", "--host", "127.0.0.1", "--port", str(port)]
            # The tracker's event loop (tracker/server.py), so the floor differs only in the app.
            command += ["--loop", "uvloop", "--log-level", "warning", f"bare_granian:{interface}"]
            env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
            self._servers.append(
                subprocess.Popen(
                    command, env=env, cwd=ROOT / "bench", start_new_session=own_session
                )
            )
            wait_for_port("127.0.0.1", port, deadline_in(20))
            label = f"granian {interface}" + (OWN_SESSION if own_session else "")
            self.urls[label] = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.terminate()
        for server in self._servers:
            server.wait()


def measure(
    name: str,
    tracker: RunningTracker,
    references: dict[str, str],
    work: Path,
    seconds: int,
    rounds: int,
) -> dict:
    """The references (nginx, the floor) and one tracker variant, alternating; then a paced
    run at half our peak."""
    paths = click_paths(tracker, 250)
    script = write_script(work / f"{name}.lua", paths)
    runs: dict[str, list[dict]] = {label: [] for label in references}
    runs[name] = []
    received = 0
    for _ in range(rounds):
        # Our store catches up with the previous round's clicks first: that indexing, left
        # to run during the references' runs, would take their CPU and flatter the ratio.
        indexing_lag(tracker)
        for label, url in references.items():
            runs[label].append(wrk(url, script, seconds))
        ours = wrk(tracker.base_url, script, seconds)
        runs[name].append(ours)
        received += ours["requests"] - ours["errors"]
    best = {key: max(results, key=lambda r: r["rps"]) for key, results in runs.items()}
    # The store follows the answers (the journal indexer yields the CPU to them,
    # events/journal_indexer.py): after the full-load runs it is behind, and catches up
    # within a second or two. The paced run measures latency at half the rate, not that
    # catch-up, so it starts once the store has caught up (how far behind it was is shown).
    lag = indexing_lag(tracker)
    paced_script = write_script(work / "paced.lua", paths, best[name]["rps"] / 2)
    paced = wrk(tracker.base_url, paced_script, 10)
    received += paced["requests"] - paced["errors"]
    stored, counted = settled_counts(tracker)
    floors = {label: run for label, run in best.items() if label.startswith("granian")}
    fastest = max(floors, key=lambda label: floors[label]["rps"])
    # The same paced load on the floor: what the host, wrk and the server alone take of the
    # p99 bar's 10 ms (on the 2-vCPU test VM a fixed 302 at ~3,000/s had a p99 of 7-8 ms).
    # Context for the verdict, which stays ours alone.
    paced_floor = wrk(references[fastest], paced_script, 10)
    # Each round against the fastest floor of that same round (for reading the verdict,
    # which compares the best runs: the host's speed moves between rounds).
    paired = [
        ours_run["rps"] / max(runs[label][round_no]["rps"] for label in floors)
        for round_no, ours_run in enumerate(runs[name])
    ]
    return {
        "paired": paired,
        "references": {label: best[label] for label in references},
        "nginx": best["nginx 302"],
        "floor": floors[fastest],
        "floor_name": fastest,
        "ours": best[name],
        "paced": paced,
        "paced_floor": paced_floor,
        "lag": lag,
        "stored": stored,
        "counted": counted,
        "received": received,
        "links": len(paths),
    }


def store_bytes(tracker: RunningTracker) -> int:
    state = tracker.workdir / "state"
    return sum(path.stat().st_size for path in state.glob("events.sqlite3*"))


def measure_flood(tracker: RunningTracker, work: Path) -> dict:
    """One link replayed from one client for FLOOD_SECONDS, default flood guard."""
    path = click_paths(tracker, 1)[0]
    before = store_bytes(tracker)
    run = wrk(tracker.base_url, write_script(work / "flood.lua", [path]), FLOOD_SECONDS)
    stored, _ = settled_counts(tracker)
    deadline = time.monotonic() + 10
    folded = 0
    while time.monotonic() < deadline:  # the counter is written within a second
        with sqlite3.connect(tracker.workdir / "state" / "events.sqlite3") as conn:
            row = conn.execute("SELECT coalesce(sum(folded), 0) FROM token_floods").fetchone()
        folded = row[0]
        if stored + folded >= run["requests"] - run["errors"]:
            break
        time.sleep(0.2)
    return {**run, "stored": stored, "folded": folded, "grown": store_bytes(tracker) - before}


def report_flood(flood: dict) -> None:
    print(f"\nflood: one link replayed from one client, {FLOOD_SECONDS} s, default flood guard")
    print(
        f"  {flood['rps']:.0f} requests/s, {flood['requests']} answered "
        f"({flood['errors']} errors), p99 {flood['p99_ms']:.2f} ms"
    )
    print(
        f"  events stored {flood['stored']}, folded into the counter {flood['folded']}, "
        f"store grew {flood['grown'] / 1e6:.2f} MB"
    )


def report(name: str, result: dict) -> None:
    nginx, floor, ours, paced = result["nginx"], result["floor"], result["ours"], result["paced"]
    ratio = ours["rps"] / floor["rps"]
    print(f"\n{name}: {result['links']} distinct tracked links, wrk -t1 -c{CONNECTIONS}")
    print(f"  {'':27}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for label, run in (*result["references"].items(), (name, ours)):
        print(f"  {label:27}{run['rps']:12.0f}{run['p50_ms']:9.2f}{run['p99_ms']:9.2f}")
    verdict = "PASS" if ratio >= FLOOR_BAR else "FAIL"
    print(
        f"  ratio {name}/{result['floor_name']} (the floor): {ratio:.3f}  bar >= {FLOOR_BAR}  "
        f"{verdict};  {name}/nginx: {ours['rps'] / nginx['rps']:.3f}"
    )
    own = result["references"].get(f"granian rsgi{OWN_SESSION}")
    if own is not None:
        print(
            f"  ratio {name}/granian rsgi{OWN_SESSION} (the floor under the tracker's"
            f" scheduling arrangement): {ours['rps'] / own['rps']:.3f}"
        )
    paired = ", ".join(f"{value:.3f}" for value in result["paired"])
    print(f"  round by round (ours / the fastest floor of the same round): {paired}")
    verdict = "PASS" if paced["p99_ms"] <= 10 else "FAIL"
    print(
        f"  at half its peak ({paced['rps']:.0f}/s): p50 {paced['p50_ms']:.2f} ms, "
        f"p99 {paced['p99_ms']:.2f} ms  bar <= 10 ms  {verdict}"
    )
    floor_paced = result["paced_floor"]
    print(
        f"  {result['floor_name']} under the same paced load ({floor_paced['rps']:.0f}/s): "
        f"p50 {floor_paced['p50_ms']:.2f} ms, p99 {floor_paced['p99_ms']:.2f} ms (the host's share)"
    )
    behind, caught_up = result["lag"]
    print(
        f"  store behind the answers after the full-load runs: {behind} clicks, caught up "
        f"in {caught_up:.2f} s (before the paced run)"
    )
    stored, counted, received = result["stored"], result["counted"], result["received"]
    durable = "PASS" if stored == counted and stored >= received else "FAIL"
    print(
        f"  clicks stored {stored}, answered by the tracker {counted}, received by wrk "
        f"{received}  {durable}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} not installed (make bench installs it)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        work = Path(tmp)
        nginx_dir = work / "nginx"
        nginx_dir.mkdir()
        nginx_port = free_port()
        (nginx_dir / "nginx.conf").write_text(NGINX_CONF.format(dir=nginx_dir, port=nginx_port))
        nginx = subprocess.Popen(["nginx", "-c", str(nginx_dir / "nginx.conf")])
        nginx_url = f"http://127.0.0.1:{nginx_port}"
        results = {}
        try:
            wait_for_port("127.0.0.1", nginx_port, deadline_in(10))
            for name, store in VARIANTS.items():
                tracker_dir = work / name
                tracker_dir.mkdir()
                events = {"store": store.format(state=tracker_dir / "state")} if store else {}
                guard = NORMAL_CLICKS
                with (
                    RunningTracker(tracker_dir, events=events, engagement_tracker=guard) as tr,
                    Floor(load_config(str(tr.config_path)).engagement_tracker.workers) as floor,
                ):
                    references = {"nginx 302": nginx_url, **floor.urls}
                    results[name] = measure(name, tr, references, work, args.seconds, args.rounds)
            flood_dir = work / "flood"
            flood_dir.mkdir()
            with RunningTracker(flood_dir) as tracker:
                flood = measure_flood(tracker, work)
        finally:
            nginx.terminate()
            nginx.wait()
    print(
        "tracker click redirects vs a bare app under Granian (same workers) and nginx's static "
        "302 (one worker), same wrk, same run"
    )
    for name, result in results.items():
        report(name, result)
    report_flood(flood)
    for name, result in results.items():
        label = "tracker" if name == "ours" else "tracker, SQLite synchronous=normal"
        ours, floor, nginx = result["ours"]["rps"], result["floor"]["rps"], result["nginx"]["rps"]
        ratio = ours / floor
        bar(
            f"{label}: clicks/s vs bare Granian app",
            f"{ratio:.3f} ({ours:.0f} vs {floor:.0f}/s, {result['floor_name']}; "
            f"nginx 302 {nginx:.0f}/s, ours/nginx {ours / nginx:.3f})",
            f">= {FLOOR_BAR}",
            ratio >= FLOOR_BAR,
        )
        p99 = result["paced"]["p99_ms"]
        bar(
            f"{label}: p99 at half its peak",
            f"{p99:.1f} ms at {result['paced']['rps']:.0f}/s (bare Granian at the same pacing: "
            f"{result['paced_floor']['p99_ms']:.1f} ms)",
            "<= 10 ms",
            p99 <= 10,
        )
        stored, counted, received = result["stored"], result["counted"], result["received"]
        bar(
            f"{label}: events stored = responses sent",
            f"{stored} stored, {counted} answered, {received} received",
            "equal",
            stored == counted and stored >= received,
        )
    answered = flood["requests"] - flood["errors"]
    bar(
        "tracker: one link replayed from one client",
        f"{flood['stored']} stored + {flood['folded']} folded of {answered} answered",
        "stored <= workers, the rest counted",
        flood["stored"] <= 2 and flood["stored"] + flood["folded"] >= answered,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
