"""``make bench``: every benchmark of SPEC 11 in one run, then one table of the bars.

Each benchmark runs as its own process (they start servers and measure CPU; none should
inherit another's state), its output shown as it comes; the lines it marks with ``BAR``
are collected and printed together at the end.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "rewrite_bench.py",
    "rewrite_cli_bench.py",
    "milter_bench.py",
    "tracker_bench.py",
    "hostile_bench.py",
    "memory_bench.py",
    "maillog_bench.py",
    "suppression_bench.py",
]


def main() -> int:
    rows: list[list[str]] = []
    started = time.monotonic()
    for name in BENCHMARKS:
        if not (HERE / name).exists():
            continue
        print(f"\n===== {name} =====", flush=True)
        process = subprocess.Popen(
            [sys.executable, str(HERE / name)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("BAR\t"):
                rows.append(line.rstrip("\n").split("\t")[1:])
            else:
                print(line, end="", flush=True)
        if process.wait() not in (0, 1):  # 1 = ran, but a bar failed
            rows.append([name, f"exit status {process.returncode}", "runs", "FAIL"])
    print(
        f"\n===== SPEC 11 bars, measured side by side in this run "
        f"({time.monotonic() - started:.0f} s) ====="
    )
    # Every Python process of the run (ours and the floors) runs on this interpreter: its
    # build decides much of our CPU (the Makefile's PYTHON says how much).
    interpreter = os.path.realpath(sys.executable)
    print(f"Python {platform.python_version()} ({interpreter}), {os.cpu_count()} CPUs")
    widths = [
        max(len(row[i]) for row in rows + [["what", "measured", "bar", ""]]) for i in range(4)
    ]
    header = ["what", "measured", "bar", ""]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
