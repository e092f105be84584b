"""Runs inside ``unshare -u -n``: our milter, a capture server and Sendmail, then the messages.

``python -m tests.harness.sendmail_driver SPEC RESULT`` (see ``sendmail.run_in_namespace``):
SPEC names the unpacked Sendmail tree, a work dir, milter config sections and the messages;
RESULT gets, per message, what the SMTP client saw, and every message the capture server
received. The namespace is private, so the loopback, the ports and the host name are ours.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .capture import CaptureServer
from .ports import deadline_in, free_port, wait_for_smtp_banner
from .sendmail import BINARY, HOSTNAME, SendmailError, write_cf
from .smtpapi import RunningMilter

DELIVERY_TIMEOUT = 60.0


def bring_up_namespace() -> None:
    """Host name Sendmail can qualify without DNS, and the namespace's own loopback up."""
    socket.sethostname(HOSTNAME)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


class RunningSendmail:
    """``sendmail -bd`` from the unpacked tree with the generated .cf; stopped on exit."""

    def __init__(self, tree: Path, cf: Path, port: int):
        self.command = [str(tree / BINARY), "-C", str(cf), "-bd"]
        self.pid_file = cf.parent / "sendmail.pid"
        self.port = port

    def __enter__(self) -> RunningSendmail:
        # -bd forks into the background; the pid file names the daemon.
        done = subprocess.run(self.command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise SendmailError(f"{' '.join(self.command)}: {done.stdout}{done.stderr}")
        wait_for_smtp_banner("127.0.0.1", self.port, deadline_in(30))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        # SIGTERM lets Sendmail finish cleanly; the PID namespace's end kills any straggler.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    # The driver is the PID namespace's init, so the daemon is its child once orphaned: reap
    # it, or its zombie would look alive.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def send(port: int, message: dict[str, Any]) -> dict[str, Any]:
    """One SMTP transaction, stage by stage, so the final reply (with Sendmail's queue id)
    is kept; what the client saw, as plain data."""
    data = base64.b64decode(message["data"])
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.test")
        code, text = client.mail(message["from"])
        if code != 250:
            return {"accepted": False, "code": code, "text": text.decode()}
        refused = {}
        for rcpt in message["rcpts"]:
            code, text = client.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = [code, text.decode()]
        if len(refused) == len(message["rcpts"]):
            return {"accepted": False, "code": code, "text": text.decode(), "refused": refused}
        code, text = client.data(data)
        return {"accepted": code == 250, "code": code, "text": text.decode(), "refused": refused}


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    workdir = Path(spec["workdir"])
    bring_up_namespace()
    (workdir / "milter").mkdir(exist_ok=True)
    (workdir / "sendmail").mkdir(exist_ok=True)
    with ExitStack() as stack:
        capture = stack.enter_context(CaptureServer())
        milter = stack.enter_context(RunningMilter(workdir / "milter", **spec["milter"]))
        smtp_port = free_port()
        socket_spec = f"inet:{milter.port}@127.0.0.1"
        cf = write_cf(
            Path(spec["tree"]), workdir / "sendmail", smtp_port, socket_spec, capture.port
        )
        stack.enter_context(RunningSendmail(Path(spec["tree"]), cf, smtp_port))
        outcomes = [send(smtp_port, message) for message in spec["messages"]]
        expected = sum(1 for o in outcomes if o["accepted"])
        delivered = capture.wait_for(expected, timeout=DELIVERY_TIMEOUT) if expected else []
    result = {
        "outcomes": outcomes,
        "delivered": [
            {
                "mail_from": m.mail_from,
                "rcpt_tos": list(m.rcpt_tos),
                "data": base64.b64encode(m.data).decode(),
            }
            for m in delivered
        ],
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
