"""One SQLite writer at a time across processes, handed over without sleeping.

SQLite lets one connection write at a time. A second one that finds the file locked waits
in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... ms between attempts: with several
tracker worker processes each committing a group every few hundred microseconds, a worker
spends most of its time asleep while the lock is free again (measured: two workers served
fewer clicks than one, with 600 ms outliers). So our own writers queue on an ``flock`` of a
file beside the database first: the kernel wakes the next waiter the moment the holder lets
go, and SQLite's own lock is then free (writers outside smtpapi-milter, such as the sqlite3
shell, still meet SQLite's busy timeout as before).

The lock is held only around one SQLite transaction, whose every step SQLite bounds by its
busy timeout; a holder that dies (even by SIGKILL) releases it with its file descriptor.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WriterLock:
    """An exclusive ``flock`` on ``path`` (created owner-only, owned like ``owner_like``); a
    context manager.

    Not reentrant, and meant to be used under the caller's own thread lock: flock belongs to
    the open file, so two threads sharing one WriterLock would not exclude each other.
    """

    def __init__(self, path: Path, owner_like: Path | None = None):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if owner_like is not None and os.geteuid() == 0:
            # root opening the store (an operator's ``smtpapi-milter events``) must not leave
            # a lock file the service's own user cannot open; SQLite does the same for its
            # -wal and -shm files.
            try:
                owner = os.stat(owner_like)
                os.fchown(self._fd, owner.st_uid, owner.st_gid)
            except OSError:
                self.close()
                raise

    def __enter__(self) -> WriterLock:
        # Blocks with the GIL released, so the process's other threads run meanwhile.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file (and with it the lock, if held)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
