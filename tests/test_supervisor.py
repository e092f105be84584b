"""The supervisors: the milter's (mta/service.py), driven by signals as systemd drives it, and
supervise.py's (``tracker``, ``run``) telling where a child that did not stop was waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from structlog.testing import capture_logs

from smtpapi_milter import supervise
from smtpapi_milter.supervise import Supervisor, threads_of

from .harness.smtpapi import RunningMilter


def test_sigterm_while_a_crashed_worker_awaits_restart_stops_at_once(tmp_path):
    # Regression: SIGTERM during the restart delay used to start a new worker and then wait
    # on it forever (systemd would SIGKILL the service after TimeoutStopSec).
    with RunningMilter(tmp_path) as milter:
        (started,) = milter.wait_for_log("milter starting")
        os.kill(started["pid"], signal.SIGKILL)
        milter.wait_for_log("milter worker exited, restarting")
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(timeout=10) == 0
        assert len(milter.wait_for_log("milter starting")) == 1  # no new worker


def test_threads_of_a_process_say_where_each_waits():
    child = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while (threads := threads_of(child.pid)) and threads[0].split()[1] != "S":
            assert time.monotonic() < deadline, threads
            time.sleep(0.01)
        (thread,) = threads
        name, state, wchan = thread.split()
        assert (name, state) == ("sleep", "S") and wchan
    finally:
        child.kill()
        child.wait()
    assert threads_of(child.pid) == []  # gone


def test_a_child_that_ignores_sigterm_is_killed_and_the_log_says_where_it_waited(monkeypatch):
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = Supervisor({"stubborn": [sys.executable, "-c", ignore]})
    supervisor._spawn("stubborn")
    process = supervisor.processes["stubborn"]
    deadline = time.monotonic() + 10
    while not ignores_sigterm(process.pid):
        assert time.monotonic() < deadline, "the child never set SIGTERM aside"
        time.sleep(0.01)
    monkeypatch.setattr(supervise, "STOP_TIMEOUT", 0.5)
    with capture_logs() as logs:
        supervisor.signal_all(signal.SIGTERM)
        supervisor._stop_all()
    assert process.returncode == -signal.SIGKILL
    (killed,) = [e for e in logs if e["event"] == "child did not stop, killing it"]
    assert killed["child"] == "stubborn" and killed["threads"]
    name = os.path.basename(sys.executable)[:15]  # the kernel's comm: 15 characters at most
    assert killed["threads"][0].split()[:2] == [name, "S"]


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        mask = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))
