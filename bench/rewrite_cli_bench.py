"""`smtpapi-milter rewrite` over the corpus in one process vs the naive rewrite (SPEC 11).

The shape of the bar as an operator meets it: every corpus HTML template wrapped as four
messages (multipart/alternative in quoted-printable and in base64, single-part 8bit and
single-part quoted-printable: no two bodies alike, so the analysis cache never hits), all
rewritten by one ``smtpapi-milter rewrite --out-dir`` process, against one process of the
naive stdlib rewrite (bench/naive_rewrite.py: email parse, regex, re-encode) over the same
files. Start-up is included on both sides. Measured as CPU time (user + sys) of each child,
from its rusage, so other load on the machine disturbs it little; rounds alternate the two.

Bar: ours <= 0.5 x naive.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bars import bar  # noqa: E402
from tests import corpus  # noqa: E402

RCPT = "jane.doe@example.org"


def single_part(html: bytes, cte: str) -> bytes:
    """``html`` as the one text/html part of a message (what many senders send)."""
    return (
        corpus.headers()
        + b"Content-Type: text/html; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + corpus.encode(html, cte)
    )


def write_messages(directory: Path) -> list[str]:
    """The corpus templates as four messages each, written to ``directory``; their paths."""
    paths = []
    for i, path in enumerate(corpus.html_files()):
        html = corpus.realistic(path.read_bytes())
        shapes = {
            "qp": corpus.wrap_html(html, "quoted-printable"),
            "b64": corpus.wrap_html(html, "base64"),
            "8bit": corpus.wrap_html(html, "8bit"),
            "qp1": single_part(html, "quoted-printable"),
        }
        for shape, message in shapes.items():
            target = directory / f"{i:03d}-{path.stem}-{shape}.eml"
            target.write_bytes(message)
            paths.append(str(target))
    return paths


def child_env(code: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    # Installed code has its bytecode compiled (pip does it); a process that may not write
    # it compiles every module again on each start, which no deployment pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """CPU seconds (user + sys) and wall seconds of one child, and its exit status."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode not in (0, 1):
        sys.stderr.write(errors.decode(errors="replace")[-2000:])
    return usage.ru_utime + usage.ru_stime, wall, process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--code",
        type=Path,
        default=ROOT / "milter",
        help="the directory holding smtpapi_milter that 'ours' runs (to compare versions)",
    )
    args = parser.parse_args()
    corpus.require = lambda: None
    if not corpus.html_files():
        print(f"no corpus at {corpus.CORPUS} (set SMTPAPI_CORPUS)", file=sys.stderr)
        return 2
    env = child_env(args.code)
    with tempfile.TemporaryDirectory(prefix="rewrite-cli-bench-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        (work / "policies").mkdir()
        paths = write_messages(work / "in")
        config = work / "smtpapi-milter.toml"
        config.write_text(
            f'state_dir = "{work / "state"}"\n[policy]\ndirectory = "{work / "policies"}"\n'
        )
        ours = [sys.executable, "-m", "smtpapi_milter.cli", "rewrite", "--config", str(config)]
        ours += ["--rcpt", RCPT, "--out-dir", str(work / "ours"), *paths]
        naive = [sys.executable, str(ROOT / "bench" / "naive_rewrite.py"), "--rcpt", RCPT]
        naive += ["--out-dir", str(work / "naive"), *paths]
        empty = [sys.executable, "-c", "pass"]
        # One untimed run each: bytecode written, key file made, page cache warm.
        for argv in (ours, naive):
            run(argv, env)
        times: dict[str, list[float]] = {"ours": [], "naive": [], "python -c pass": []}
        walls: dict[str, list[float]] = {name: [] for name in times}
        statuses = {}
        for _ in range(args.rounds):  # alternate, so both see the same machine state
            for name, argv in (("ours", ours), ("naive", naive), ("python -c pass", empty)):
                cpu, wall, statuses[name] = run(argv, env)
                times[name].append(cpu)
                walls[name].append(wall)
        written = {name: len(list((work / name).iterdir())) for name in ("ours", "naive")}
        tracked = sum(b"/c/" in p.read_bytes() for p in (work / "ours").iterdir())
    print(
        f"{len(paths)} messages ({len(paths) // 4} corpus templates x qp, base64, 8bit, "
        f"single-part qp), one process each side, best / median of {args.rounds} rounds"
    )
    print(f"{'':16}{'CPU s best':>12}{'CPU s median':>14}{'wall s best':>13}{'ms/msg':>9}")
    for name, values in times.items():
        best = min(values)
        print(
            f"{name:16}{best:12.3f}{statistics.median(values):14.3f}"
            f"{min(walls[name]):13.3f}{1000 * best / len(paths):9.3f}"
        )
    print(f"outputs written: ours {written['ours']}, naive {written['naive']}")
    print(f"messages with a tracked link (ours): {tracked}")
    print(f"exit statuses: ours {statuses['ours']}, naive {statuses['naive']}")
    ratio = min(times["ours"]) / min(times["naive"])
    ok = ratio <= 0.5 and statuses["ours"] == 0 and written["ours"] == len(paths)
    print(f"ratio ours/naive (CPU, start-up included): {ratio:.3f}  bar <= 0.5")
    bar("rewrite CLI, one process over the corpus, vs naive (CPU)", f"{ratio:.3f}", "<= 0.5", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
