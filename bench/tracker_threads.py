"""CPU per click of the live tracker under wrk, by thread, and of wrk itself.

tracker_cpu.py measures the app in one process without Granian; this one runs the real
tracker (``RunningTracker``: Granian, its workers, the journal, SQLite) under tracker_bench.py's
load (wrk, 64 connections, the same click paths and flood-guard settings) and reads each
worker thread's user and system CPU and voluntary context switches from /proc before and
after, divided by the clicks wrk got answered. Threads of the same role are summed over the
workers. In a Granian worker the main thread runs the event loop; the journal indexer and
the event writer name themselves (thread_names.py); other threads are Granian's.

The machine's busy share during the run says whether it was CPU-bound (and other processes'
load shows there too): on two shared cores the clicks/s move with everything else, the CPU
per click much less.

    flock /tmp/bench.lock .venv/bin/python bench/tracker_threads.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "milter")]

from tests.harness.smtpapi import RunningTracker  # noqa: E402
from tracker_bench import (  # noqa: E402
    NORMAL_CLICKS,
    click_paths,
    indexing_lag,
    settled_counts,
    write_script,
    wrk,
)

OUR_THREADS = ("journal-indexer", "event-writer")  # named by thread_names.py
TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += [int(child), *descendants(int(child))]
    return found


def indexer_pids(tracker: RunningTracker) -> list[int]:
    """The journal indexer process of a running tracker (none if it has not started)."""
    assert tracker.process is not None
    return [
        pid
        for pid in descendants(tracker.process.pid)
        if Path(f"/proc/{pid}/comm").read_text().strip() == "journal-indexer"
    ]


def thread_times(pid: int) -> dict[str, tuple[float, float, int]]:
    """role -> (user s, system s, voluntary switches) of each thread of process ``pid``."""
    times = {}
    try:
        tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))
        for task in tasks:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            switches = re.search(
                r"^voluntary_ctxt_switches:\s+(\d+)", (task / "status").read_text(), re.M
            )
            comm = (task / "comm").read_text().strip()
            # Our threads carry their names (thread_names.py); Granian's Python-holding
            # threads read "python" like any unnamed one.
            if int(task.name) == pid:
                role = "indexer process" if comm == "journal-indexer" else "event loop (main)"
            elif comm in OUR_THREADS:
                role = comm
            elif comm.startswith("python"):
                role = "granian (python)"
            else:
                role = comm
            user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
            old = times.get(role, (0.0, 0.0, 0))
            times[role] = (old[0] + user, old[1] + system, old[2] + int(switches.group(1)))
    except FileNotFoundError:  # a process or thread that ended meanwhile
        pass
    return times


def snapshot(pids: list[int]) -> dict[tuple[int, str], tuple[float, float, int]]:
    return {(pid, role): t for pid in pids for role, t in thread_times(pid).items()}


def machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracker-threads-") as tmp:
        work = Path(tmp)
        (work / "tracker").mkdir()
        with RunningTracker(work / "tracker", engagement_tracker=NORMAL_CLICKS) as tracker:
            script = write_script(work / "clicks.lua", click_paths(tracker, 100))
            wrk(tracker.base_url, script, 3)  # warm: caches, journal files, store pages
            pids = descendants(tracker.process.pid)
            before, cpu_before, children = snapshot(pids), machine(), os.times()
            run = wrk(tracker.base_url, script, args.seconds)
            after, cpu_after, children_after = snapshot(pids), machine(), os.times()
            behind, caught_up = indexing_lag(tracker)
            stored, counted = settled_counts(tracker)
    clicks = run["requests"] - run["errors"]
    per = 1e6 / clicks
    ticks = [b - a for a, b in zip(cpu_before, cpu_after, strict=True)]
    busy = 100 * (sum(ticks) - ticks[3] - ticks[4]) / sum(ticks)
    print(
        f"{run['rps']:.0f} clicks/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms "
        f"({clicks} answered; stored {stored}, counted {counted}); machine busy {busy:.0f} %"
    )
    roles: dict[str, list[float]] = {}
    for key, (user, system, switches) in after.items():
        old = before.get(key, (0.0, 0.0, 0))
        total = roles.setdefault(key[1], [0.0, 0.0, 0.0])
        total[0] += user - old[0]
        total[1] += system - old[1]
        total[2] += switches - old[2]
    print(f"  {'thread (all workers)':24}{'user us':>9}{'sys us':>8}{'switches':>10}  per click")
    tracker_total = 0.0
    for role, (user, system, switches) in sorted(roles.items(), key=lambda r: -r[1][0] - r[1][1]):
        if user + system <= 0:
            continue
        tracker_total += user + system
        print(f"  {role:24}{user * per:9.1f}{system * per:8.1f}{switches / clicks:10.2f}")
    load = (
        children_after.children_user
        + children_after.children_system
        - children.children_user
        - children.children_system
    )
    print(f"  tracker in all: {tracker_total * per:.1f} us per click; wrk {load * per:.1f} us")
    print(f"  store behind the answers when wrk ended: {behind} clicks, in {caught_up:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
