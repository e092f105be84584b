"""This machine's processes as /proc tells them: for the sandbox and the tests that must know
which processes are left (a stopped Postfix's group, a killed supervisor's session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class Process(NamedTuple):
    pid: int
    state: str  # "R", "S", ..., "Z" for a zombie
    ppid: int
    pgrp: int
    session: int


def processes() -> Iterator[Process]:
    """Every process's stat line, read once each (/proc/PID/task/*/children is not on every
    kernel, so relations come from here)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        state, ppid, pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        yield Process(int(entry.name), state, int(ppid), int(pgrp), int(session))
