"""What a new user runs first: ``smtpapi-milter demo`` and ``smtpapi-milter run``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_http, wait_for_port

from .harness.smtpapi import ROOT, toml

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
CLI = [sys.executable, "-m", "smtpapi_milter.cli"]


def test_demo_shows_a_click_event_and_cleans_up():
    # Ports pinned the two ways README names: an option, and an environment variable.
    milter, tracker, admin = free_port(), free_port(), free_port()
    result = subprocess.run(
        [*CLI, "demo", "--milter-port", str(milter), "--tracker-port", str(tracker)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**ENV, "SMTPAPI_DEMO_ADMIN_PORT": str(admin)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert (
        f"milter on 127.0.0.1:{milter}, tracker on 127.0.0.1:{tracker}, "
        f"events API on 127.0.0.1:{admin}"
    ) in out
    assert "[6/6]" in out and "302 Location: https://orchard.example.com/harvest" in out
    event_lines = [line for line in out.splitlines() if "autumn-2026" in line]
    kinds = {line.split()[2] for line in event_lines}
    assert {"injection", "open", "click", "link_unsubscribe"} <= kinds
    assert "X-MSYS-API header in delivered copy: False" in out
    # The admin listener always wants a token: the demo hands the generated one out.
    assert re.search(r"admin token \(the dashboard asks for it once\): [A-Za-z0-9_-]{40,}\n", out)
    made = re.findall(r"(?:workspace|Postfix in) (/\S+?),? ", out)
    assert len(made) == 2 and not any(Path(p).exists() for p in made), made


def test_demo_refuses_a_pinned_port_in_use_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "demo", "--admin-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
            check=False,
        )
    assert result.returncode == 1
    assert f"--admin-port {port}: 127.0.0.1:{port} is in use" in result.stderr
    bad = subprocess.run(
        [*CLI, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, "SMTPAPI_DEMO_TRACKER_PORT": "80a"},
        check=False,
    )
    assert bad.returncode == 1 and "SMTPAPI_DEMO_TRACKER_PORT='80a'" in bad.stderr


def test_run_brings_up_both_listeners_and_stops_both_on_sigterm(tmp_path):
    milter, tracker, admin = free_port(), free_port(), free_port()
    config = tmp_path / "smtpapi-milter.toml"
    (tmp_path / "policies").mkdir()
    config.write_text(
        toml(
            {
                "milter": {"socket": f"inet:{milter}@127.0.0.1"},
                "policy": {"directory": str(tmp_path / "policies")},
                "engagement_tracker": {
                    "listen": f"127.0.0.1:{tracker}",
                    "admin_listen": f"127.0.0.1:{admin}",
                },
            },
            {"state_dir": str(tmp_path / "state")},
        )
    )
    process = subprocess.Popen(
        [*CLI, "run", "--config", str(config)],
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
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        leftovers = subprocess.run(
            ["pgrep", "-s", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert leftovers == [], f"processes left behind: {leftovers}"
        for port in (milter, tracker, admin):
            try:
                wait_for_port("127.0.0.1", port, deadline_in(0.5))
            except TimeoutError:
                continue
            raise AssertionError(f"port {port} still answers after SIGTERM")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
