"""Python threads named for the operating system too, so ``top -H``, ``ps -L`` and /proc show
what each thread of a tracker worker is ("event-writer", "journal-indexer").

CPython before 3.14 gives its threads no OS name: every thread of a worker reads "python",
and Granian's own threads share names that change between its releases, so a thread's CPU
could only be attributed by guessing from start order (bench/tracker_threads.py did, and
guessed wrong once Granian's RSGI threads came first).
"""

from __future__ import annotations

import contextlib

PR_SET_NAME = 15  # <sys/prctl.h>
_libc = None


def name_this_thread(name: str) -> None:
    """Give the calling thread ``name`` (the kernel keeps 15 bytes) where Linux allows it."""
    global _libc
    with contextlib.suppress(Exception):  # a name is a convenience, never a failure
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_NAME, name.encode("ascii")[:15], 0, 0, 0)
