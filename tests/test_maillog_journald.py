"""The follower reading journald by cursor, as a real process: SIGKILL mid-way, a new
journal file while it runs; every outcome stored once. The journal files are real ones,
written by systemd-journal-remote from journal export text (this machine runs no journald)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from smtpapi_milter.maillog.lines import parse_syslog

from .harness.smtpapi import RunningMaillog
from .test_maillog_follower import (
    expected,
    injection,
    message_lines,
    outcomes,
    wait_for,
    wait_for_some,
)

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
pytestmark = pytest.mark.skipif(
    not Path(JOURNAL_REMOTE).exists(), reason="systemd-journal-remote is not installed"
)
BOOT = uuid.uuid4().hex


def write_journal(path: Path, first: int, last: int) -> None:
    """Messages first..last-1 as mail-facility entries of a new journal file."""
    entries = []
    for i in range(first, last):
        for raw in message_lines(i):
            line = parse_syslog(raw)
            assert line is not None
            micros = int(line.time * 1e6) + len(entries)
            entries.append(
                f"__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP={micros}\n"
                f"_BOOT_ID={BOOT}\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER={line.tag}\n"
                f"SYSLOG_PID={line.pid}\nMESSAGE={line.text}\n"
            )
    # Something of another facility, which the source must not even read.
    entries.append(
        f"__REALTIME_TIMESTAMP=1\n__MONOTONIC_TIMESTAMP=1\n_BOOT_ID={BOOT}\n"
        "SYSLOG_FACILITY=3\nSYSLOG_IDENTIFIER=cron\nMESSAGE=4F00000000: to=<x@y>\n"
    )
    staging = path.parent.parent / "staging" / path.name  # the name must end in .journal
    staging.parent.mkdir(exist_ok=True)
    subprocess.run(
        [JOURNAL_REMOTE, f"--output={staging}", "-"],
        input="\n".join(entries).encode() + b"\n",
        check=True,
        capture_output=True,
        timeout=60,
    )
    shutil.move(staging, path)  # appears whole to the reader


def test_journald_cursor_survives_sigkill_and_new_files(tmp_path):
    from smtpapi_milter.events.store import open_store

    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal / "one.journal", 0, 200)
    follower = RunningMaillog(
        tmp_path,
        maillog={"source": "journald", "journal_directory": str(journal), "batch_lines": 7},
    )
    store = open_store(f"sqlite:///{tmp_path}/state/events.sqlite3")
    try:
        store.record([injection(i) for i in range(300)])
        follower.start()
        wait_for_some(store, 20)
        follower.kill()
        assert sum(outcomes(store).values()) < sum(expected(200).values())
        follower.start()
        assert wait_for(store, expected(200)) == expected(200)
        write_journal(journal / "two.journal", 200, 250)
        assert wait_for(store, expected(250)) == expected(250)
        follower.stop()
        assert outcomes(store) == expected(250)
    finally:
        follower.stop()
        store.close()
