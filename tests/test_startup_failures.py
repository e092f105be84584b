"""A port already in use: one line naming setting and address, a few tries, a non-zero exit.

Through the real CLI, with a listening socket on the port the command needs: the process
that would listen says why in one line and exits with ``EXIT_CANNOT_LISTEN``; its
supervisor restarts it as systemd would (a few times), then gives up, says so, and exits
with ``EXIT_START_LIMIT`` so that systemd sees the failure, leaving no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from smtpapi_milter.listen_check import EXIT_CANNOT_LISTEN
from smtpapi_milter.sandbox.ports import free_port
from smtpapi_milter.start_limit import EXIT_START_LIMIT, START_LIMIT_BURST

from .harness.smtpapi import ROOT, toml
from .test_orphans import session_processes

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
WITHIN = 60.0  # seconds: three tries with back-off take ~15 on a loaded machine


def write_config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {name: free_port() for name in ("milter", "metrics", "listen", "admin")}
    (tmp_path / "policies").mkdir()
    sections = {
        "milter": {
            "socket": f"inet:{ports['milter']}@127.0.0.1",
            "metrics_listen": f"127.0.0.1:{ports['metrics']}",
        },
        "policy": {"directory": str(tmp_path / "policies")},
        "engagement_tracker": {
            "listen": f"127.0.0.1:{ports['listen']}",
            "admin_listen": f"127.0.0.1:{ports['admin']}",
        },
    }
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    return config, ports


def occupy(port: int) -> socket.socket:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def run_cli(command: str, config: Path) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpapi_milter.cli", command, "--config", str(config)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the whole tree: it restarted endlessly
        out, err = process.communicate()
        raise AssertionError(
            f"'{command}' still running after {WITHIN} s:\n{err[-2000:]}"
        ) from None
    finally:
        left = session_processes(process.pid)
        if left:
            os.killpg(process.pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    return process.returncode, out, err, time.monotonic() - started


def assert_reported(err: str, out: str, setting: str, address: str) -> None:
    expected = f"smtpapi-milter: cannot listen on {address} ({setting}): address already in use"
    lines = err.splitlines()
    assert lines and all(line.startswith(expected) for line in lines), err
    assert len(lines) == START_LIMIT_BURST, f"tried {len(lines)} times:\n{err}"
    assert "Traceback" not in out + err
    assert "not restarting it" in out


def test_tracker_with_its_port_taken_names_the_setting_and_gives_up(tmp_path):
    config, ports = write_config(tmp_path)
    with occupy(ports["listen"]):
        code, out, err, _ = run_cli("tracker", config)
    assert code == EXIT_START_LIMIT
    assert_reported(err, out, "[engagement_tracker] listen", f"127.0.0.1:{ports['listen']}")


def test_milter_with_its_port_taken_names_the_setting_and_gives_up(tmp_path):
    config, ports = write_config(tmp_path)
    with occupy(ports["milter"]):
        code, out, err, _ = run_cli("milter", config)
    assert code == EXIT_START_LIMIT
    assert_reported(err, out, "[milter] socket", f"inet:{ports['milter']}@127.0.0.1")
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert EXIT_CANNOT_LISTEN in [line.get("code") for line in logged]  # the worker's status


def test_run_stops_everything_when_the_tracker_cannot_listen(tmp_path):
    config, ports = write_config(tmp_path)
    with occupy(ports["admin"]):
        code, out, err, _ = run_cli("run", config)
    assert code == EXIT_START_LIMIT
    # The tracker's supervisor gave up after its tries; ``run`` did not start it again.
    admin = f"127.0.0.1:{ports['admin']}"
    assert_reported(err, out, "[engagement_tracker] admin_listen", admin)
    assert "child gave up starting, stopping" in out


def test_systemd_does_not_restart_a_supervisor_that_gave_up():
    # The units whose process is a supervisor (the maillog follower supervises nothing).
    names = ["smtpapi-milter", "smtpapi-milter-activated", "smtpapi-tracker"]
    units = [ROOT / "packaging" / "systemd" / f"{name}.service" for name in names]
    for unit in units:
        lines = unit.read_text().splitlines()
        assert f"RestartPreventExitStatus={EXIT_START_LIMIT}" in lines, unit.name
