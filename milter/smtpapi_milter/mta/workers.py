"""Several libmilter processes on one socket: fork once the socket is open.

CPython runs Python code one thread at a time per process, so a single milter process uses
one CPU core however many connections it serves, while the MTA uses all of them. libmilter
has no pre-fork mode, but pymilter's ``runmilter`` opens the socket before it enters
libmilter's main loop: forking between the two gives N processes accepting on the same
listening socket, and the kernel hands each new MTA connection to one of them.

The first process (the leader) is the supervisor's child. It forwards the supervisor's
signals to the others (followers), which die with it (``orphans.die_with_parent``), and it stops
(so the supervisor starts the whole group again) when a follower dies unexpectedly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import milter as libmilter  # pymilter's C module
import structlog

from ..orphans import die_with_parent

log = structlog.get_logger("smtpapi_milter.milter")


class WorkerGroup:
    """``count`` milter processes; ``start(index)`` sets each one up after the fork."""

    def __init__(self, count: int, start: Callable[[WorkerGroup], None]):
        self.count = count
        self.start = start
        self.index = 0
        self.followers: list[int] = []
        self.stopping = False
        self.lost_follower = False
        self._watchers: list[threading.Thread] = []

    @property
    def is_leader(self) -> bool:
        return self.index == 0

    def run(self, runmilter: Callable[[], Any]) -> None:
        """Call ``runmilter`` (pymilter's), forking the followers just before libmilter's
        main loop; every process returns from here when its libmilter stops."""
        real_main = libmilter.main

        def forking_main() -> Any:
            libmilter.main = real_main
            if self.count > 1:
                _accept_without_blocking()
            self._fork()
            self.start(self)
            return real_main()

        libmilter.main = forking_main
        try:
            runmilter()
        finally:
            libmilter.main = real_main

    def _fork(self) -> None:
        leader = os.getpid()
        for index in range(1, self.count):
            pid = os.fork()
            if pid == 0:
                self.index, self.followers = index, []
                # A follower must not outlive the leader: it would hold the socket a new
                # group needs.
                die_with_parent(leader)
                return
            self.followers.append(pid)

    def signal_followers(self, signum: int) -> None:
        for pid in self.followers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def watch(self, on_loss: Callable[[], None]) -> None:
        """Leader: call ``on_loss`` once if a follower exits while the group is not stopping."""
        fired = threading.Lock()

        def wait_for(pid: int) -> None:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                if not self.stopping and fired.acquire(blocking=False):
                    log.error("milter worker process exited", pid=pid, status=status)
                    self.lost_follower = True
                    on_loss()

        for pid in self.followers:
            watcher = threading.Thread(target=wait_for, args=(pid,), name="watch", daemon=True)
            watcher.start()
            self._watchers.append(watcher)

    def wait_for_followers(self, timeout: float) -> None:
        """Leader, after its own stop: let the followers drain, then reap them."""
        self.stopping = True
        self.signal_followers(signal.SIGUSR2)
        for watcher in self._watchers:
            watcher.join(timeout)
        if any(watcher.is_alive() for watcher in self._watchers):
            log.warning("milter worker processes still running, killing them")
            self.signal_followers(signal.SIGKILL)
            for watcher in self._watchers:
                watcher.join(5)


def _accept_without_blocking() -> None:
    """Make the listening socket (libmilter's, open by now) non-blocking, for every process.

    All processes of the group poll the one socket; a connection wakes them all, one wins
    the accept() and the others would block in theirs until the next connection: a follower
    told to stop (its leader gone, nobody connecting to a socket a new group has replaced)
    never came back to notice. libmilter takes EAGAIN from accept() as "poll again". The flag
    belongs to the shared open file, so setting it once before the fork covers the group.
    pymilter does not expose libmilter's descriptor: it is the one listening socket we hold.
    """
    with contextlib.suppress(FileNotFoundError):  # no /proc: nothing to find it by
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                probe = socket.socket(fileno=fd)
            except OSError:
                continue  # not a socket (or closed since listdir)
            try:
                if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    os.set_blocking(fd, False)
            finally:
                probe.detach()  # the descriptor stays libmilter's
