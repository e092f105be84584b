"""CSV import of 100,000 suppression list entries through the real CLI (SPEC 14, issue 17).

Bar: ``smtpapi-milter suppression import`` of a 100,000-row CSV file (SparkPost's columns,
mixed types and descriptions, one address in ten repeated in another case) into a SQLite
store (synchronous=FULL) takes at most 5 s, the whole command measured: Python's start, the
configuration, reading and checking every row, and one transaction of upserts. Export of the
same list is timed too (no bar). The store must hold exactly the distinct entries afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from bars import bar  # noqa: E402
from smtpapi_milter.events.store import open_store  # noqa: E402
from smtpapi_milter.suppression.store import list_entries  # noqa: E402
from tests.harness.smtpapi import toml  # noqa: E402

ROWS = 100_000
BAR_SECONDS = 5.0
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}


def write_csv(path: Path, rows: int) -> int:
    """The file, and how many distinct (recipient, type) entries it holds."""
    distinct = set()
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("recipient,type,description\r\n")
        for i in range(rows):
            # every tenth row repeats an earlier address in capitals: the same entry
            n = i - 5 if i % 10 == 9 else i
            address = f"reader{n}@example{n % 97}.org"
            kind = "transactional" if n % 7 == 0 else "non_transactional"
            if i % 10 == 9:
                address = address.upper()
            distinct.add((address.lower(), kind))
            out.write(f'{address},{kind},"imported from the old provider, row {i}"\r\n')
    return len(distinct)


def cli(config: Path, *args: str, stdout: object = subprocess.PIPE) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "suppression", *args, "--config", str(config)],
        env=ENV,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"suppression {args[0]} failed: {result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smtpapi-suppression-bench-") as tmp:
        work = Path(tmp)
        source = work / "list.csv"
        distinct = write_csv(source, args.rows)
        url = f"sqlite:///{work / 'state' / 'events.sqlite3'}"
        with contextlib.closing(open_store(url)):  # the service made the store
            pass
        config = work / "smtpapi-milter.toml"
        config.write_text(toml({"events": {"store": url}}, {"state_dir": str(work / "state")}))
        imported = cli(config, "import", str(source))
        with contextlib.closing(open_store(url)) as store:
            stored = len(list_entries(store, limit=None))
        with (work / "export.csv").open("w") as out:
            exported = cli(config, "export", stdout=out)
        print(f"{args.rows} CSV rows ({source.stat().st_size / 1e6:.1f} MB), {distinct} entries")
        print(f"import: {imported:.2f} s for the whole command; {stored} entries stored")
        print(f"export: {exported:.2f} s")
    passed = imported <= BAR_SECONDS and stored == distinct
    bar(
        f"suppression CSV import ({args.rows} rows, SQLite)",
        f"{imported:.2f} s",
        f"<= {BAR_SECONDS:.0f} s",
        passed,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
