"""A stop asked for while the milter starts is not lost (mta/service.py).

Two windows, each of which left the milter running after SIGTERM until systemd's SIGKILL
(1 to 2 of 30-40 SIGTERMs sent 0.15-0.45 s after ``smtpapi-milter milter`` started):

* the supervisor's SIGTERM handler ran while the worker was being spawned: it found no
  worker to pass the drain on to, and then waited for the new one for good;
* the worker ignored SIGUSR2 (drain) until its signal thread ran, so a drain passed on
  during its start was dropped.

Both are made to happen here on purpose, with the real supervisor and worker.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

from smtpapi_milter.sandbox.ports import free_port

from .harness.smtpapi import ROOT

STOP_LIMIT = 20  # seconds; a stop that is lost never comes


def config(tmp_path, policy: str = "") -> str:
    policies = tmp_path / "policies"
    policies.mkdir()
    if policy:
        (policies / "gate.py").write_text(policy)
    path = tmp_path / "milter.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[milter]\nsocket = "inet:{free_port()}@127.0.0.1"\n'
        f'workers = 1\n[policy]\ndirectory = "{policies}"\n'
    )
    return str(path)


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "milter")}


SUPERVISOR = """
import os, signal, sys
from smtpapi_milter.mta.service import Supervisor

class SigtermWhileSpawning(Supervisor):
    def _spawn(self):
        worker = super()._spawn()
        print(worker.pid, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the worker is assigned
        return worker

sys.exit(SigtermWhileSpawning(sys.argv[1]).run())
"""


def test_sigterm_while_the_supervisor_spawns_the_worker_stops_both(tmp_path):
    with subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, config(tmp_path)],
        env=environment(),
        stdout=subprocess.PIPE,
        text=True,
    ) as supervisor:
        worker = int(supervisor.stdout.readline())
        try:
            assert supervisor.wait(STOP_LIMIT) == 0
        finally:
            if supervisor.poll() is None:
                os.kill(worker, signal.SIGKILL)
                supervisor.kill()
    assert not os.path.exists(f"/proc/{worker}") or _zombie(worker)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


# A policy that holds the worker's start (its first load) until the test writes to a FIFO:
# the drain then comes before the worker's signal thread exists.
GATE = """
import os
_passed = {passed!r}
if not os.path.exists(_passed):
    open(_passed, "w").close()
    with open({fifo!r}) as gate:
        gate.read()
"""


def test_a_drain_during_the_workers_start_is_acted_on_once_it_runs(tmp_path):
    fifo, passed = tmp_path / "gate", tmp_path / "passed"
    os.mkfifo(fifo)
    path = config(tmp_path, GATE.format(fifo=str(fifo), passed=str(passed)))
    command = [sys.executable, "-m", "smtpapi_milter.cli", "milter", "--worker"]
    worker = subprocess.Popen(command + ["--config", path], env=environment())
    try:
        writer = _open_when_read(fifo, worker)
        worker.send_signal(signal.SIGUSR2)  # what the supervisor sends on SIGTERM
        os.write(writer, b"go")
        os.close(writer)
        assert worker.wait(STOP_LIMIT) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _open_when_read(fifo, process: subprocess.Popen) -> int:
    """The FIFO's write end once the worker has it open for reading (a probe, not a sleep:
    a non-blocking open for writing fails with ENXIO until a reader is there)."""
    deadline = time.monotonic() + STOP_LIMIT
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or process.poll() is not None:
                raise
            if time.monotonic() > deadline:
                raise TimeoutError("the worker never reached its policy") from None
            time.sleep(0.01)
