"""Running the milter: a supervisor process that owns the signals, and a libmilter worker.

libmilter takes over SIGHUP, SIGTERM and SIGINT in the process that runs it and treats all
three as "stop". Administrators expect SIGHUP to reload (SPEC 3), so ``smtpapi-milter
milter`` is a small supervisor: it validates the files on SIGHUP and, only if they load,
tells the worker to reload with SIGUSR1; SIGTERM is passed on so libmilter finishes its
connections; a worker that dies unexpectedly is restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import Milter
import structlog

from ..config import ConfigError, load_config
from ..policy import PolicyLoadError, PolicySet
from .milter import ACTIONS, SmtpapiMilter
from .state import MilterState

log = structlog.get_logger("smtpapi_milter.milter")

MILTER_NAME = "smtpapi-milter"
RELOAD_SIGNAL = signal.SIGUSR1


def validate(config_path: str | None) -> None:
    """Load configuration and policies as a reload would; raise if either is broken."""
    config = load_config(config_path)
    PolicySet.load(config.policy.directory)


def serve(config_path: str | None) -> int:
    """The worker: run libmilter with our adapter until told to stop."""
    state = MilterState.load(config_path)
    config = state.pipeline.config
    _reload_on_signal(state)
    Milter.factory = lambda: SmtpapiMilter(state)
    Milter.set_flags(ACTIONS)
    log.info("milter starting", socket=config.milter.socket, config=config.source, pid=os.getpid())
    Milter.runmilter(MILTER_NAME, config.milter.socket, timeout=config.milter.timeout)
    log.info("milter stopped")
    return 0


def _reload_on_signal(state: MilterState) -> None:
    """SIGUSR1 → reload, from a thread (libmilter keeps the main thread in C).

    The C-level handler writes the signal number to a pipe whatever thread it lands on; a
    thread blocks on the pipe and reloads. That thread blocks libmilter's three signals so
    they always reach libmilter's own signal thread.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.signal(RELOAD_SIGNAL, lambda *_: None)
    signal.set_wakeup_fd(write_fd)

    def wait_for_reloads() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
        while True:
            received = os.read(read_fd, 64)
            if RELOAD_SIGNAL in received:
                state.reload()

    threading.Thread(target=wait_for_reloads, name="reload", daemon=True).start()


# libmilter runs a thread per connection, and glibc gives threads their own malloc arenas
# (up to 8 per core), each keeping what its threads freed. With 50 connections sending 10 MB
# bodies that was 3 MiB per connection that never went back, and with two arenas the peak
# still swung by 180 MiB between runs (SPEC 11, bench/memory_bench.py). Threads that take
# turns on the GIL lose nothing measurable sharing one.
MALLOC_ARENAS = "1"


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment: ours, with a malloc arena limit unless one is set."""
    return {"MALLOC_ARENA_MAX": MALLOC_ARENAS, **environ}


class Supervisor:
    """Keeps one worker running; turns SIGHUP into a checked reload, SIGTERM into a stop."""

    def __init__(self, config_path: str | None, restart_delay: float = 1.0):
        self.config_path = config_path
        self.restart_delay = restart_delay
        self.stopping = False
        self.worker: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "smtpapi_milter.cli", "milter", "--worker"]
        if self.config_path:
            command += ["--config", self.config_path]
        return subprocess.Popen(command, env=worker_environment(os.environ))

    def _on_hup(self, *_: object) -> None:
        try:
            validate(self.config_path)
        except (ConfigError, PolicyLoadError) as exc:
            log.error("reload refused, keeping the running configuration", error=str(exc))
            return
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(RELOAD_SIGNAL)

    def _on_term(self, *_: object) -> None:
        self.stopping = True
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        delay = self.restart_delay
        while True:
            started = time.monotonic()
            self.worker = self._spawn()
            code = self.worker.wait()
            if self.stopping:
                return 0
            # A worker that keeps dying is restarted less and less often.
            delay = self.restart_delay if time.monotonic() - started > 60 else min(delay * 2, 30)
            log.error("milter worker exited, restarting", code=code, delay=delay)
            time.sleep(delay)
