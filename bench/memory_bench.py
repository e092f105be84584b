"""SPEC 11 milter memory: 50 concurrent 10 MB messages through Postfix, against the ceiling.

Runs tests/milter_load.py's scenario (a private Postfix, the milter as a real process, one
SMTP connection per message, resident memory of the milter's process tree sampled) and
prints the numbers and two ceilings, both of which must hold: the measured one, baseline +
max_concurrent_rewrites x one message alone + clients x (spool_memory_limit + 2 MiB) + 64 MiB,
and the one the README states (milter/smtpapi_milter/mta/memory.py), with 16 x the message
size in place of one message alone. Needs root (Postfix).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from bars import bar  # noqa: E402
from tests.milter_load import MIB, concurrent_load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size-mb", type=float, default=10)
    parser.add_argument(
        "--rewrites", type=int, help="max_concurrent_rewrites (default: the milter's default)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smtpapi-memory-") as workdir:
        result = concurrent_load(
            Path(workdir),
            args.clients,
            int(args.size_mb * MIB),
            milter={} if args.rewrites is None else {"max_concurrent_rewrites": args.rewrites},
        )
    print(result.summary())
    ok = (
        result.peak_rss <= min(result.ceiling, result.stated_ceiling)
        and result.delivered == args.clients
    )
    print(f"milter memory bar (peak <= ceiling, all delivered): {'PASS' if ok else 'FAIL'}")
    bar(
        f"milter memory, {args.clients} concurrent {args.size_mb:g} MB messages",
        f"peak {result.peak_rss / MIB:.0f} MiB, {result.delivered} delivered",
        f"<= {min(result.ceiling, result.stated_ceiling) / MIB:.0f} MiB",
        ok,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
