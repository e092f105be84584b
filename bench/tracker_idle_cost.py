"""What the journal indexer's "idle" CPU costs the tracker's answers, on this machine.

The indexer runs in Linux's SCHED_IDLE class (events/journal_indexer.py) so that it only
gets the CPU the answers leave. Whether that CPU is free depends on the machine: on a
virtual machine a busy vCPU can slow the other one (its host core's sibling, the host's own
scheduling), whatever class the guest gives the work. This measures it, side by side and
alternating, with the live tracker under tracker_bench.py's load (wrk, 64 connections, the
same click paths and flood-guard settings):

- ``as is``: the indexer running, as in the tracker bench;
- ``indexer paused``: the indexer stopped (SIGSTOP) during wrk's run, resumed after it;
- ``paused + idle burner``: the indexer stopped, and one process spinning in SCHED_IDLE
  in its place: CPU the answers leave, used by work that is not the indexer's.

If the burner costs the answers about what the indexer does, the cost is the machine's
(idle-class CPU is not free here) and only less indexing work per click lowers it; if the
burner costs nothing, the indexer's own effects (its disk writes, its cache use) do.
Every click is still durable in all three (the journal); the store catches up with each
run's clicks before the next run starts.

    flock /tmp/bench.lock .venv/bin/python bench/tracker_idle_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "milter")]

from tests.harness.smtpapi import RunningTracker  # noqa: E402
from tracker_bench import NORMAL_CLICKS, click_paths, indexing_lag, write_script, wrk  # noqa: E402
from tracker_threads import indexer_pids  # noqa: E402

ARMS = ("as is", "indexer paused", "paused + idle burner")
# A process that spins forever in the idle class (it sets its own class: no chrt needed).
BURNER = (
    "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"
)


def run_arm(arm: str, tracker: RunningTracker, indexer: list[int], script: Path, seconds: int):
    indexing_lag(tracker)  # the store has the previous runs' clicks: every arm starts alike
    burner = None
    if arm != "as is":
        for pid in indexer:
            os.kill(pid, signal.SIGSTOP)
    try:
        if arm == "paused + idle burner":
            burner = subprocess.Popen([sys.executable, "-c", BURNER])
        return wrk(tracker.base_url, script, seconds)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        for pid in indexer:
            os.kill(pid, signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="tracker-idle-cost-") as tmp:
        work = Path(tmp)
        with RunningTracker(work, engagement_tracker=NORMAL_CLICKS) as tracker:
            script = write_script(work / "clicks.lua", click_paths(tracker, 250))
            wrk(tracker.base_url, script, 2)  # warm: caches, journal files, store pages
            indexer = indexer_pids(tracker)
            if not indexer:
                print("no journal-indexer process found", file=sys.stderr)
                return 2
            for round_no in range(args.rounds):
                for arm in ARMS:
                    rates[arm].append(run_arm(arm, tracker, indexer, script, args.seconds)["rps"])
                line = ", ".join(f"{arm} {rates[arm][-1]:.0f}" for arm in ARMS)
                print(f"round {round_no + 1}: {line} clicks/s", flush=True)
    paused = statistics.median(rates["indexer paused"])
    print(f"medians over {args.rounds} rounds of {args.seconds} s (wrk -c64):")
    for arm in ARMS:
        median = statistics.median(rates[arm])
        print(f"  {arm:22}{median:9.0f} clicks/s  {median / paused:6.3f} x paused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
