"""Running the milter: a supervisor process that owns the signals, and a libmilter worker.

libmilter takes over SIGHUP, SIGTERM and SIGINT in the process that runs it and treats all
three as "stop". Administrators expect SIGHUP to reload (SPEC 3), so ``smtpapi-milter
milter`` is a small supervisor: it validates the files on SIGHUP and, only if they load,
tells the worker to reload with SIGUSR1; a worker that dies unexpectedly is restarted.

SIGTERM must not cut a transaction in half, and libmilter's own stop does: once its main
loop has returned, nobody answers the connections still open (the MTA times out and
tempfails). So the supervisor turns SIGTERM into SIGUSR2, on which the worker refuses new
transactions (451 4.3.2, the client retries), waits for those in progress to end, and only
then asks libmilter to stop. A second SIGTERM stops the worker at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket as stdsocket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import Milter
import milter as libmilter  # pymilter's C module: smfi_stop
import structlog

from ..config import ConfigError, load_config
from ..listen_check import check_milter_socket, opensocket_failed
from ..orphans import child_environment
from ..policy import PolicyLoadError, PolicySet
from ..signal_thread import act_on_signals
from ..start_limit import EXIT_START_LIMIT, StartLimit
from ..tokens import TokenCodec
from .activation import Relay, listen_sockets
from .metrics import MilterMetrics
from .milter import ACTIONS, SmtpapiMilter
from .state import MilterState
from .workers import WorkerGroup

log = structlog.get_logger("smtpapi_milter.milter")

MILTER_NAME = "smtpapi-milter"
RELOAD_SIGNAL = signal.SIGUSR1
DRAIN_SIGNAL = signal.SIGUSR2
DRAIN_LIMIT = 60.0  # seconds a stopping worker waits for transactions in progress
# After the last callback returns, libmilter still writes its reply to the MTA: a moment for
# that before the process exits.
DRAIN_GRACE = 0.2


def validate(config_path: str | None) -> None:
    """Load configuration and policies as a reload would; raise if either is broken."""
    config = load_config(config_path)
    PolicySet.load(config.policy.directory)


def serve(config_path: str | None, socket_override: str | None = None) -> int:
    """The worker: run libmilter with our adapter (in ``[milter] workers`` processes)
    until told to stop.

    ``socket_override`` replaces ``[milter] socket`` (the supervisor's private socket under
    socket activation).
    """
    # SIGUSR1/2 would kill a process (their default) that has not set up its signal thread
    # yet: a starting worker, or a follower just forked. Until then they are noted, and
    # acted on once it runs: a drain ignored so (the supervisor's SIGTERM early in the
    # worker's start) left the worker running for good.
    for signum in (RELOAD_SIGNAL, DRAIN_SIGNAL):
        signal.signal(signum, _note_early_signal)
    config = load_config(config_path)
    # Before the socket opens, as one process: broken policies fail the start, and the
    # default link key exists before any worker (or anyone reading it) needs it.
    PolicySet.load(config.policy.directory)
    TokenCodec.from_config(config)
    socket = socket_override or config.milter.socket
    setting = "socket activation's worker socket" if socket_override else "[milter] socket"
    check_milter_socket(setting, socket)  # one clear line, not libmilter's "cannot opensocket"
    states: list[MilterState] = []
    metrics = MilterMetrics()  # before the fork: every worker counts into its directory

    def start(group: WorkerGroup) -> None:
        # After the fork: each process has its own store connection, threads and ids.
        state = MilterState.load(config_path, group.index, group.count)
        state.metrics = metrics
        states.append(state)
        if group.is_leader:
            metrics.serve(config.milter.metrics_listen)
        Milter.factory = lambda: SmtpapiMilter(state)
        _handle_signals(state, group, socket)
        if group.is_leader:
            group.watch(lambda: _drain_and_stop(state, group, socket))
        log.info("milter starting", socket=socket, config=config.source, pid=os.getpid())

    group = WorkerGroup(config.milter.workers or os.cpu_count() or 1, start)
    Milter.set_flags(ACTIONS)
    try:
        group.run(lambda: Milter.runmilter(MILTER_NAME, socket, timeout=config.milter.timeout))
    except libmilter.error as exc:
        if "opensocket" not in str(exc):
            raise
        raise opensocket_failed(setting, socket) from None
    time.sleep(DRAIN_GRACE)  # the last replies are written after our callbacks return
    if group.is_leader:
        group.wait_for_followers(DRAIN_LIMIT + 5)
    log.info("milter stopped")
    for state in states:
        state.close()
    if group.is_leader:
        metrics.close()
    return 1 if group.lost_follower else 0


def _handle_signals(state: MilterState, group: WorkerGroup, socket: str) -> None:
    """SIGUSR1 → reload, SIGUSR2 → drain and stop, from a thread (libmilter keeps the main
    thread in C: signal_thread.py). That thread blocks libmilter's three signals so they
    always reach libmilter's own signal thread. Those that came before are acted on first (a
    forked follower inherits the leader's notes, as it would have the signals: the leader
    passes both on)."""

    def reload() -> None:
        group.signal_followers(RELOAD_SIGNAL)
        state.reload()

    def drain() -> bool:
        _drain_and_stop(state, group, socket)
        return True

    act_on_signals(
        {RELOAD_SIGNAL: reload, DRAIN_SIGNAL: drain},
        block={signal.SIGHUP, signal.SIGTERM, signal.SIGINT},
        pending=_early_signals,
    )


_early_signals: set[int] = set()


def _note_early_signal(signum: int, frame: object) -> None:
    _early_signals.add(signum)


def _drain_and_stop(state: MilterState, group: WorkerGroup, socket: str) -> None:
    group.stopping = True
    group.signal_followers(DRAIN_SIGNAL)
    log.info("stopping: finishing the transactions in progress", limit=DRAIN_LIMIT)
    if not state.drain(DRAIN_LIMIT):
        log.warning("transactions still in progress, stopping anyway", waited=DRAIN_LIMIT)
    # smfi_stop waits for the listener's lock, which libmilter holds across a select() of
    # up to five seconds; a connection to our own socket ends that select at once.
    stopper = threading.Thread(target=libmilter.stop, name="stop")
    stopper.start()
    while stopper.is_alive():
        _wake_listener(socket)
        stopper.join(0.05)


def _wake_listener(socket: str) -> None:
    """Connect once to our own socket, to wake libmilter's listener."""
    kind, _, where = socket.partition(":")
    try:
        if kind in ("unix", "local"):
            with contextlib.closing(stdsocket.socket(stdsocket.AF_UNIX)) as probe:
                probe.settimeout(1)
                probe.connect(where)
        elif kind in ("inet", "inet6"):
            port, _, host = where.partition("@")
            loopback = "::1" if kind == "inet6" else "127.0.0.1"
            stdsocket.create_connection((host or loopback, int(port)), timeout=1).close()
    except (OSError, ValueError):
        pass  # only a speed-up: libmilter stops at its next poll timeout anyway


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
        self.worker_socket: str | None = None  # set under socket activation
        self.relays: list[Relay] = []
        self._temp_dir: str | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "smtpapi_milter.cli", "milter", "--worker"]
        if self.config_path:
            command += ["--config", self.config_path]
        if self.worker_socket:
            command += ["--socket", f"unix:{self.worker_socket}"]
        return subprocess.Popen(command, env=child_environment(worker_environment(os.environ)))

    def _relay_activated_sockets(self) -> None:
        """With sockets from systemd: worker on a private unix socket, relays in front."""
        sockets = listen_sockets()
        if not sockets:
            return
        # systemd's RuntimeDirectory= (0750, ours); elsewhere a private temp dir.
        directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        self._temp_dir = None if directory else tempfile.mkdtemp(prefix="smtpapi-milter-")
        self.worker_socket = str(Path(directory or self._temp_dir) / "worker.sock")
        self.relays = [Relay(sock, self.worker_socket).start() for sock in sockets]
        log.info("socket activation", sockets=len(sockets), worker_socket=self.worker_socket)

    def _on_hup(self, *_: object) -> None:
        try:
            validate(self.config_path)
        except (ConfigError, PolicyLoadError) as exc:
            log.error("reload refused, keeping the running configuration", error=str(exc))
            return
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(RELOAD_SIGNAL)

    def _on_term(self, *_: object) -> None:
        # The first SIGTERM drains (see the module docstring); a second one cuts short.
        signum = signal.SIGTERM if self.stopping else DRAIN_SIGNAL
        self.stopping = True
        for relay in self.relays:
            relay.stop()
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self._relay_activated_sockets()
        try:
            return self._supervise()
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _supervise(self) -> int:
        delay = self.restart_delay
        limit = StartLimit()
        while True:
            started = time.monotonic()
            self.worker = self._spawn()
            if self.stopping:  # a SIGTERM while it was being started found no worker to tell
                self.worker.send_signal(DRAIN_SIGNAL)
            code = self.worker.wait()
            if self.stopping:
                return 0
            ran = time.monotonic() - started
            if limit.exhausted(code, ran):  # it cannot start: say so, and let systemd see it
                log.error(
                    "milter worker keeps failing at start, not restarting it",
                    code=code,
                    failed_starts=len(limit.failed),
                )
                return EXIT_START_LIMIT
            # A worker that keeps dying is restarted less and less often.
            delay = self.restart_delay if ran > 60 else min(delay * 2, 30)
            log.error("milter worker exited, restarting", code=code, delay=delay)
            time.sleep(delay)
            if self.stopping:  # SIGTERM during the delay: there is no worker to wait for
                return 0
