"""A small process supervisor: keep named child processes running, pass signals on.

Used where one command runs several processes: ``tracker`` (public and admin listeners) and
``run`` (milter and tracker on one machine). A child that exits unexpectedly is restarted,
less and less often if it keeps dying, and not at all once it keeps failing at start
(start_limit.py): then every child is stopped and ``Supervisor.run`` returns
``EXIT_START_LIMIT``.
SIGTERM/SIGINT stop every child and wait for them;
SIGHUP goes to each child (each reloads in its own way) unless a callback takes it.

The handlers only note a signal; the loop passes it on, and a SIGTERM no sooner than
``HUP_SETTLE`` after the last SIGHUP it passed on. A child that gets SIGTERM while it
handles SIGHUP may never stop: Granian's server (the tracker's listeners, 2.8.9) runs its
SIGTERM handler inside its SIGHUP handler, which holds the lock the SIGTERM handler waits
for, and so waits forever (py-spy; tests/test_tracker_stop.py); or, a moment later, its
reload clears the wake-up that the SIGTERM set. A SIGTERM sent from within a handler also
interrupted our own SIGHUP handler, so that some children got SIGTERM before SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from .orphans import child_environment
from .start_limit import EXIT_START_LIMIT, StartLimit

log = structlog.get_logger("smtpapi_milter.supervise")

STOP_TIMEOUT = 30.0
HUP_SETTLE = 0.5  # seconds between passing on a SIGHUP and a SIGTERM (see above)
POLL_SECONDS = 0.2


class Supervisor:
    """Runs ``children`` (name -> argv) until told to stop; ``run`` returns the exit status."""

    def __init__(
        self,
        children: Mapping[str, Sequence[str]],
        *,
        env: Mapping[str, str] | None = None,
        on_hup: Callable[[], bool] | None = None,
        restart_delay: float = 1.0,
    ):
        self.children = dict(children)
        self.env = dict(env) if env is not None else None
        self.on_hup = on_hup
        self.restart_delay = restart_delay
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._delays = dict.fromkeys(self.children, restart_delay)
        self._started: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._limits = {name: StartLimit() for name in self.children}
        self.stopping = False
        self.status = 0
        self._hup = False  # a SIGHUP noted, not passed on yet
        self._last_hup = -HUP_SETTLE  # monotonic time a SIGHUP was last passed on

    def _spawn(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            list(self.children[name]), env=child_environment(self.env)
        )
        self._started[name] = time.monotonic()
        log.info("started", child=name, pid=self.processes[name].pid)

    def _on_hup(self, *_: object) -> None:
        self._hup = True

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def _pass_on_hup(self) -> None:
        self._hup = False
        if self.on_hup is not None and not self.on_hup():
            return  # the callback refused (it logged why)
        self.signal_all(signal.SIGHUP)
        self._last_hup = time.monotonic()

    def signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        for name in self.children:
            self._spawn(name)
        while not self.stopping:
            if self._hup:
                self._pass_on_hup()
            self._reap_and_restart()
            time.sleep(POLL_SECONDS)  # a poll interval, not a readiness wait
        settle = self._last_hup + HUP_SETTLE - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        self.signal_all(signal.SIGTERM)
        self._stop_all()
        return self.status

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for name, process in list(self.processes.items()):
            code = process.poll()
            if code is None or self.stopping:
                continue
            due = self._due.get(name)
            if due is None:
                ran = now - self._started[name]
                if self._limits[name].exhausted(code, ran):
                    self._give_up(name, code)
                    return
                # A child that ran a minute is healthy again: back to the short delay.
                delay = self.restart_delay if ran > 60 else min(self._delays[name] * 2, 30.0)
                self._delays[name] = delay
                self._due[name] = now + delay
                log.error("child exited, restarting", child=name, code=code, delay=delay)
            elif now >= due:
                del self._due[name]
                self._spawn(name)

    def _give_up(self, name: str, code: int) -> None:
        failed = len(self._limits[name].failed)
        if failed:
            log.error(
                "child keeps failing at start, not restarting it; stopping",
                child=name,
                code=code,
                failed_starts=failed,
            )
        else:  # a supervisor itself, which applied the limit to its own child
            log.error("child gave up starting, stopping", child=name, code=code)
        self.status = EXIT_START_LIMIT
        self.stopping = True  # run() stops every child

    def _stop_all(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in self.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "child did not stop, killing it",
                    child=name,
                    pid=process.pid,
                    threads=threads_of(process.pid),
                )
                process.kill()
                process.wait()
        log.info("stopped", pid=os.getpid())


def threads_of(pid: int) -> list[str]:
    """Each thread of process ``pid`` as "name state wait-channel", from /proc: where a child
    that did not stop was waiting (a lock, a sleep, running), for the log line that says it
    is killed. Seen once in CI: the tracker's journal indexer did not stop in 30 s after a
    SIGHUP and a SIGTERM, and nothing told where it was. [] where /proc cannot tell."""
    try:
        tasks = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return []
    threads = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{pid}/task/{tid}/wchan") as wchan_file:
                wchan = wchan_file.read().strip() or "-"
        except OSError:
            continue  # ended meanwhile
        name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        threads.append(f"{name} {state} {wchan}")
    return threads
