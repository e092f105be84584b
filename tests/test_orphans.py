"""No orphans: SIGKILL a supervisor and every process it started is gone, its ports free.

Each command is started in a session of its own; only the top process is killed (as an OOM
killer or ``kill -9`` would), and what must follow is probed in /proc: no process of the
session left (Granian's worker processes and the milter's worker group included), and
every port it listened on can be bound again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_http, wait_for_port
from smtpapi_milter.sandbox.processes import processes

from .harness.smtpapi import ROOT, RunningMilter, RunningTracker, toml

GONE_WITHIN = 10.0  # seconds; the kernel signals at once, this is slack for a loaded machine
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}


def session_processes(session: int) -> set[int]:
    """Live (not zombie) processes of ``session``."""
    return {p.pid for p in processes() if p.session == session and p.state != "Z"}


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kill_and_expect_nothing_left(process: subprocess.Popen[bytes], ports: list[int]) -> None:
    session = process.pid  # started with start_new_session: its pid names the session
    before = session_processes(session)
    assert len(before) > 1, f"expected a process tree, found {before}"
    os.kill(process.pid, signal.SIGKILL)  # the supervisor alone, no goodbyes
    process.wait()
    deadline = time.monotonic() + GONE_WITHIN
    left, busy = before, ports
    while time.monotonic() < deadline:
        left = session_processes(session)
        busy = [port for port in ports if not port_is_free(port)]
        if not left and not busy:
            return
        time.sleep(0.1)  # polling /proc: nothing to wait on for another's child
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)  # leave nothing behind for the next test
    raise AssertionError(f"still running {GONE_WITHIN} s after SIGKILL: {left}; busy: {busy}")


def test_killed_tracker_leaves_no_listener_or_granian_worker(tmp_path):
    tracker = RunningTracker(tmp_path, engagement_tracker={"workers": 2}).start()
    kill_and_expect_nothing_left(tracker.process, [tracker.port, tracker.admin_port])


def test_killed_milter_supervisor_leaves_no_worker(tmp_path):
    milter = RunningMilter(tmp_path, milter={"workers": 2}).start()
    milter.wait_for_log("milter starting", count=2)  # leader and follower
    kill_and_expect_nothing_left(milter.process, [milter.port, milter.metrics_port])


def test_killed_run_leaves_neither_milter_nor_tracker(tmp_path):
    milter, tracker, admin, metrics = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "smtpapi-milter.toml"
    (tmp_path / "policies").mkdir()
    sections = {
        "milter": {"socket": f"inet:{milter}@127.0.0.1", "metrics_listen": f"127.0.0.1:{metrics}"},
        "policy": {"directory": str(tmp_path / "policies")},
        "engagement_tracker": {
            "listen": f"127.0.0.1:{tracker}",
            "admin_listen": f"127.0.0.1:{admin}",
        },
    }
    config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpapi_milter.cli", "run", "--config", str(config)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = deadline_in(60)
        wait_for_port("127.0.0.1", milter, deadline)
        wait_for_http(f"http://127.0.0.1:{tracker}/healthz", deadline, process)
        wait_for_http(f"http://127.0.0.1:{admin}/healthz", deadline, process)
        kill_and_expect_nothing_left(process, [milter, tracker, admin, metrics])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_killed_socket_activated_milter_leaves_no_worker(tmp_path):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate not found: the Makefile installs systemd")
    milter = RunningMilter(tmp_path)  # its config and log; started below by the activator
    command = [activate, "-l", f"127.0.0.1:{milter.port}", "-E", f"PYTHONPATH={ROOT / 'milter'}"]
    # Where systemd's RuntimeDirectory= puts the worker's socket: else a directory of its
    # own in /tmp, which a killed supervisor cannot remove (one was left by every run).
    command += ["-E", f"RUNTIME_DIRECTORY={tmp_path}"]
    command += [sys.executable, "-m", "smtpapi_milter.cli", "milter"]
    command += ["--config", str(milter.config_path)]
    with milter.log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_port("127.0.0.1", milter.port, deadline_in(20))  # starts the supervisor
        milter.wait_for_log("milter starting", timeout=30)
        kill_and_expect_nothing_left(process, [milter.port, milter.metrics_port])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# Holds the demo's ``run`` open (as the walkthrough does between its steps) until killed.
DEMO = """
import sys
from pathlib import Path
from smtpapi_milter.demo.walkthrough import supervised, write_config
work = Path(sys.argv[1])
config, ports = write_config(work, {})
with supervised(config, work / "run.log", ports):
    print(" ".join(map(str, ports.values())), flush=True)
    sys.stdin.read()  # until the test kills us
"""


def test_killed_demo_leaves_no_milter_or_tracker(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-c", DEMO, str(tmp_path)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    run = None
    try:
        ports = [int(port) for port in demo.stdout.readline().split()]  # once all answer
        assert ports, "the demo's run did not start"
        (run,) = [
            int(p) for p in Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
        ]
        demo.kill()
        demo.wait()
        deadline = time.monotonic() + GONE_WITHIN
        while time.monotonic() < deadline:
            left = session_processes(run)  # run leads a session of its own
            busy = [port for port in ports if not port_is_free(port)]
            if not left and not busy:
                return
            time.sleep(0.1)  # polling /proc
        raise AssertionError(f"left after the demo was killed: {left}; busy: {busy}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdin.close()
        demo.stdout.close()
        if run is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run, signal.SIGKILL)
