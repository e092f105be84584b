"""Resident memory of a process tree, sampled from /proc while a test drives it.

SPEC 11 bounds the milter's memory under load. The milter is a supervisor with a libmilter
worker under it, so the figure that matters is the sum over the tree; it is sampled in a
thread (every ``interval`` seconds) and the peak kept, with no dependency beyond /proc.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

from smtpapi_milter.sandbox.processes import processes

PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid for every live process."""
    return {p.pid: p.ppid for p in processes()}


def _rss(pid: int) -> int:
    try:
        # statm: size resident shared ... in pages; resident is the RSS.
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants now (0 once it has gone)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss(current)
        stack += children.get(current, [])
    return total


class RssSampler:
    """Samples ``tree_rss(pid)`` in a thread until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            rss = tree_rss(self.pid)
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
