"""What the disk flush under each answer, and the indexer, cost the tracker on this machine.

The tracker answers a click once its event is on disk: each worker's event loop writes the
group of clicks it handled with ``O_DSYNC`` (events/journal.py), and the node's indexer puts
them into the store meanwhile (events/journal_indexer.py). tracker_bench.py's bar compares
the answers with a bare Granian app that does neither. This measures how much of the gap is
each, under the same load (wrk, 64 connections, tracker_bench.py's clicks and flood-guard
settings), every arm beside the bare app in the same round:

- ``as is``: the tracker as shipped;
- ``indexer paused``: its indexer stopped (SIGSTOP) during wrk's run, resumed after it;
- ``no flush``: a second tracker whose journal is opened without ``O_DSYNC``
  (a sitecustomize.py in its workers takes the flag away), so its answers wait for no disk:
  **not durable**, an upper bound of what any way of flushing could give;
- ``no flush, indexer paused``: both.

The arms run in a new order each round (rotated), so that a run's place in the round, which
moved results by 10 % and more in scratch runs on the 2-vCPU test VM, is shared out. Every
run starts with the store caught up with the clicks before it.

On the test VM (a write-back virtio disk without FUA: every O_DSYNC write is a write and a
cache flush, 1-1.5 ms under this load), 4 rounds of 6 s, medians of the ratios to bare
Granian: as is 0.382, indexer paused 0.441, no flush 0.495, both 0.533 (8.6k, 10.8k, 11.8k
and 13.0k clicks/s), in that order in every round. With wrk's 64 connections the rate is
connections / latency, and each click waits for a flush: letting the event loop go on
during the flush (a thread of its own without Python, signalling the loop on an eventfd;
scratch code) changed nothing there (better in 4 of 9 rounds), since each click still
waits for one, and a Python thread doing the write lost 17 % (it waits for the GIL).

    flock /tmp/bench.lock .venv/bin/python bench/tracker_flush_cost.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "milter")]

from tests.harness.smtpapi import RunningTracker  # noqa: E402
from tracker_bench import (  # noqa: E402
    NORMAL_CLICKS,
    Floor,
    click_paths,
    indexing_lag,
    write_script,
    wrk,
)
from tracker_threads import indexer_pids  # noqa: E402

ARMS = ("as is", "indexer paused", "no flush", "no flush, indexer paused")
FLOOR = "granian rsgi"  # tracker_bench.py's floor: the fastest interface, the same workers
WORKERS = 2
# Imported by each Python process of the no-flush tracker before anything else: the journal
# reads os.O_DSYNC when it opens a file, and finds no flag to add.
NO_FLUSH = "import os\n\nos.O_DSYNC = 0  # bench/tracker_flush_cost.py: NOT durable\n"


def run_arm(arm: str, trackers: dict[str, RunningTracker], scripts: dict[str, Path], seconds: int):
    for tracker in trackers.values():
        indexing_lag(tracker)  # the store has every earlier click: each arm starts alike
    kind = "no flush" if arm.startswith("no flush") else "as is"
    tracker = trackers[kind]
    paused = indexer_pids(tracker) if arm.endswith("indexer paused") else []
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        return wrk(tracker.base_url, scripts[kind], seconds)["rps"]
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    ratios: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with (
        tempfile.TemporaryDirectory(prefix="tracker-flush-cost-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        hook = work / "no-flush-site"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(NO_FLUSH)
        trackers: dict[str, RunningTracker] = {}
        for kind in ("as is", "no flush"):
            directory = work / kind.replace(" ", "-")
            directory.mkdir()
            tracker = RunningTracker(directory, engagement_tracker=NORMAL_CLICKS)
            if kind == "no flush":
                tracker.python_path = (hook,)
            trackers[kind] = stack.enter_context(tracker)
        for kind, tracker in trackers.items():
            if not indexer_pids(tracker):
                print(f"{kind}: no journal-indexer process found", file=sys.stderr)
                return 2
        floor = stack.enter_context(Floor(WORKERS))
        scripts = {
            kind: write_script(work / f"{kind.replace(' ', '-')}.lua", click_paths(tracker, 250))
            for kind, tracker in trackers.items()
        }
        for kind, tracker in trackers.items():  # warm: caches, journal files, store pages
            wrk(tracker.base_url, scripts[kind], 2)
        for round_no in range(args.rounds):
            order = ARMS[round_no % len(ARMS) :] + ARMS[: round_no % len(ARMS)]
            here = {arm: run_arm(arm, trackers, scripts, args.seconds) for arm in order}
            for tracker in trackers.values():
                indexing_lag(tracker)
            bare = wrk(floor.urls[FLOOR], scripts["as is"], args.seconds)["rps"]
            for arm in ARMS:
                rates[arm].append(here[arm])
                ratios[arm].append(here[arm] / bare)
            line = ", ".join(f"{arm} {here[arm]:.0f} ({here[arm] / bare:.3f})" for arm in ARMS)
            print(f"round {round_no + 1}: bare Granian {bare:.0f}; {line} clicks/s", flush=True)
    print(f"medians over {args.rounds} rounds of {args.seconds} s (wrk -c64), x bare Granian:")
    for arm in ARMS:
        rate, ratio = statistics.median(rates[arm]), statistics.median(ratios[arm])
        print(f"  {arm:26}{rate:9.0f} clicks/s  {ratio:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
