"""Counter directories: a SIGKILLed group's directory is removed by the next group."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from smtpapi_milter.multiproc import counter_directory

PREFIX = "smtpapi-test-counters-"


def test_directories_of_dead_processes_go_live_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = tmp_path / f"{PREFIX}{dead.stdout.strip()}-abc"
    live = tmp_path / f"{PREFIX}{os.getppid()}-def"  # our parent runs as long as we do
    unnamed = tmp_path / f"{PREFIX}old-style"  # no pid in the name: not ours to judge
    for path in (stale, live, unnamed):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    made = Path(counter_directory(PREFIX))
    assert made.is_dir() and made.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert not stale.exists() and live.exists() and unnamed.exists()
