"""Socket activation (packaging/systemd/smtpapi-milter.socket): the passed socket reaches mail.

``systemd-socket-activate`` plays systemd: it owns the listening socket and execs the milter
with LISTEN_FDS on the first connection, exactly as a .socket unit does. Postfix then talks
to the milter through that socket (the supervisor relays to the libmilter worker), and a
worker killed mid-service costs no message: the next connection waits for its successor.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from smtpapi_milter.mta.activation import listen_sockets

from . import corpus
from .harness.capture import CaptureServer
from .harness.postfix import PrivatePostfix
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED
from .test_milter_postfix import HTML, html_of

ROOT = Path(__file__).resolve().parents[1]


def test_sockets_for_another_process_are_not_taken():
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert listen_sockets(environ) == []
    assert environ == {}  # unset either way: a child must not take them for its own


def test_no_activation_without_the_variables():
    assert listen_sockets({}) == []


def send(port: int) -> None:
    message = corpus.wrap_html(HTML, "quoted-printable")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        assert client.sendmail("news@example.com", ["jane.doe@example.org"], message) == {}


def test_activated_milter_tracks_and_survives_a_worker_crash(tmp_path):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate not found: the Makefile installs systemd")
    milter = RunningMilter(tmp_path)  # its config and log; started below by the activator
    command = [activate, "-l", f"127.0.0.1:{milter.port}", "-E", f"PYTHONPATH={ROOT / 'milter'}"]
    command += [str(Path(sys.executable).parent / "smtpapi-milter"), "milter"]
    command += ["--config", str(milter.config_path)]
    with milter.log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with (
            CaptureServer() as capture,
            PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port) as postfix,
        ):
            send(postfix.smtp_port)  # the first milter connection starts the milter
            capture.wait_for(1, timeout=60)
            (activated,) = milter.wait_for_log("socket activation")
            (started,) = milter.wait_for_log("milter starting")
            assert started["socket"] == f"unix:{activated['worker_socket']}"

            os.kill(started["pid"], signal.SIGKILL)
            # Once the supervisor saw it die (its socket may accept until then), and during
            # the restart delay: the relay holds the connection until the new worker is up.
            milter.wait_for_log("milter worker exited, restarting")
            send(postfix.smtp_port)
            delivered = capture.wait_for(2, timeout=60)
            assert len(milter.wait_for_log("milter starting", count=2)) == 2
        for copy in delivered:
            assert TRACKED.search(html_of(copy.data)), "not tracked: the milter was bypassed"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # supervisor and worker: leave nothing
            process.wait()
            raise
    assert code == 0
    assert not Path(activated["worker_socket"]).parent.exists()  # its temp dir is removed
