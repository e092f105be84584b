"""Where our milter's CPU goes under the throughput bench's loads (a developer's tool).

Sets up what ``milter_bench.py`` does (Postfix, our milter, the zero-cost floor), then sends
each load (bulk, mail merge) through our milter while ``py-spy record`` samples its worker
processes, and writes one collapsed-stack file per load (``--out-dir``), with a summary of
the functions that take most samples (self and total). py-spy is not a project dependency:
``pip install py-spy`` first.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import milter_bench


def summarise(collapsed: Path, top: int) -> str:
    """The functions with the most samples in a collapsed-stack file, self and total."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples"]
    for title, counter in (("self", own), ("total", total)):
        lines.append(f"-- {title}")
        for frame, n in counter.most_common(top):
            lines.append(f"{100 * n / max(samples, 1):5.1f} %  {frame}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/milter-profile"))
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="smtpapi-milterprofile-")  # kept: the milters' logs
    print(f"work directory {tmp}")
    with contextlib.ExitStack() as stack:
        bench = milter_bench.set_up(stack, Path(tmp), args.messages, 0)
        ours = bench.milters["ours"]
        for load in bench.loads.values():  # warm-up
            milter_bench.run(bench.ports["ours"], load[:40], args.sessions, bench.counter)
        for name, load in bench.loads.items():
            out = args.out_dir / f"{name}.collapsed"
            command = [spy, "record", "--pid", str(ours.pid), "--subprocesses"]
            command += ["--rate", "200", "--format", "raw", "-o", str(out)]
            command += ["--native"] if args.native else []
            recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            try:
                rate = milter_bench.run(bench.ports["ours"], load, args.sessions, bench.counter)
            finally:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=60)
            print(f"== {name}: {rate:.1f} msg/s")
            print(summarise(out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
