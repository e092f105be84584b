"""CPU per ``TokenCodec.decode`` of the click tokens tracker_cpu.py serves.

The tracker decodes the token of every request; this times that call alone (timeit, best of
several repeats, process CPU time) over tracker_cpu.py's click paths: 250 copies of a
newsletter, 25 links each. SMTPAPI_PURE_PYTHON=1 times the pure-Python reference.

    flock /tmp/bench.lock .venv/bin/python bench/token_decode.py
    SMTPAPI_PURE_PYTHON=1 flock /tmp/bench.lock .venv/bin/python bench/token_decode.py
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "milter")]

from smtpapi_milter import tokens  # noqa: E402
from smtpapi_milter.tokens import TokenCodec, generate_key  # noqa: E402
from tracker_cpu import click_paths  # noqa: E402


def main() -> int:
    codec = TokenCodec([tokens._parse_key(generate_key(), "bench")])
    clicks = [path[3:].decode("latin-1") for path in click_paths(codec, 250)]
    decode = codec.decode

    def run() -> None:
        for token in clicks:
            decode(token)

    timer = timeit.Timer(run, timer=time.process_time)
    best = min(timer.repeat(repeat=7, number=4)) / (4 * len(clicks))
    path = "pure Python" if tokens._tokenmint is None else "native"
    print(f"{len(clicks)} click tokens ({path}): {best * 1e6:.2f} us per decode (best of 7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
