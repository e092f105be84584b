"""Run fuzz targets as subprocesses, each for a bounded time; report speed and crashes.

``python -m tests.fuzz.run [--seconds N] [--workdir DIR] [TARGET ...]`` (``make fuzz``).
Each target gets a corpus directory seeded from ../shared/corpus (in DIR, kept between runs
when given, else a temporary one) and writes crash reproducers next to it, never into the
source tree. Exit status 1 when any target found a failing input; the input is printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .seeds import SEEDS

ROOT = Path(__file__).resolve().parents[2]
TARGETS = tuple(SEEDS)
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
MAX_INPUT = 256 * 1024  # libFuzzer's -max_len: room for the largest corpus message


@dataclass
class FuzzRun:
    target: str
    returncode: int
    runs: int
    seconds: float
    output: str
    reproducer: bytes | None

    @property
    def execs_per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0

    def report(self) -> str:
        line = f"{self.target}: {self.runs} runs in {self.seconds:.0f} s"
        line += f" ({self.execs_per_second:.0f} exec/s)"
        if self.returncode == 0:
            return line + ", no failure"
        # The Python traceback and libFuzzer's verdict, lines kept short (libFuzzer repeats
        # the input in hex and base64); the input is shown once below.
        lines = self.output.splitlines()
        start = next((i for i, ln in enumerate(lines) if "Uncaught Python exception" in ln), None)
        shown = lines[start : start + 40] if start is not None else []
        shown += [ln for ln in lines if "ERROR: libFuzzer" in ln or ln.startswith("SUMMARY")]
        shown = [ln if len(ln) < 400 else ln[:400] + "..." for ln in shown or lines[-40:]]
        text = f"{line}, FAILED (exit {self.returncode})\n" + "\n".join(shown)
        if self.reproducer is not None:
            saved = Path(tempfile.gettempdir()) / f"smtpapi-fuzz-{self.target}-reproducer"
            saved.write_bytes(self.reproducer)
            text += (
                f"\nreproducer ({len(self.reproducer)} bytes): {self.reproducer[:300]!r}"
                f"\nbase64: {base64.b64encode(self.reproducer[:3000]).decode()}"
                f"\nsaved as {saved}; re-run: python -m tests.fuzz.fuzz_{self.target} {saved}"
            )
        return text


def seed_corpus(target: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for number, data in enumerate(SEEDS[target]()):
        (directory / f"seed-{number:04d}").write_bytes(data[:MAX_INPUT])


def run_target(target: str, seconds: int, workdir: Path, seed: int | None = None) -> FuzzRun:
    """Fuzz one target for ``seconds`` in a child process; parse libFuzzer's summary.

    A fixed ``seed`` makes the run repeatable: libFuzzer then tries the same inputs in the
    same order, so a slower machine runs a prefix of what a faster one ran.
    """
    corpus_dir = workdir / target / "corpus"
    artifacts = workdir / target / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    seed_corpus(target, corpus_dir)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'milter'}"}
    if seed is not None:
        env["PYTHONHASHSEED"] = "0"  # set order steers coverage feedback too
    command = [
        sys.executable,
        "-m",
        f"tests.fuzz.fuzz_{target}",
        f"-max_total_time={seconds}",
        f"-max_len={MAX_INPUT}",
        "-timeout=30",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        *([f"-seed={seed}"] if seed is not None else []),
        str(corpus_dir),
    ]
    started = time.monotonic()
    # The deadline is generous: libFuzzer stops itself; this only catches a hung child.
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=seconds + 300,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    done = _DONE.search(output)
    runs = int(done.group(1)) if done else _last_count(output)
    reproducer = None
    artifact = _ARTIFACT.search(output)
    if artifact and Path(artifact.group(1)).exists():
        reproducer = Path(artifact.group(1)).read_bytes()
    return FuzzRun(target, result.returncode, runs, elapsed, output, reproducer)


def _last_count(output: str) -> int:
    counts = re.findall(r"^#(\d+)\s", output, re.M)
    return int(counts[-1]) if counts else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)))
    parser.add_argument("--workdir", help="keep corpora and reproducers here between runs")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(TARGETS)}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="smtpapi-fuzz-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        for target in args.targets or TARGETS:
            run = run_target(target, args.seconds, workdir)
            print(run.report(), flush=True)
            failed |= run.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
