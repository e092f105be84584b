"""The per-client connection cap shipped for the tracker (packaging/nftables), for real.

Granian cannot cap connections per client address, so the cap is a kernel rule. The test
loads the shipped file (its port and cap set for the test) in a network namespace of its
own, so the host's firewall is never touched, with a real tracker inside: one address gets
no more than the cap, another address is still served at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .harness.smtpapi import ROOT, RunningTracker

RULES = ROOT / "packaging" / "nftables" / "smtpapi-tracker.nft"
CAP = 8
TRIES = 20


def rules_for(port: int, cap: int) -> str:
    text = RULES.read_text()
    assert text.count("ct count over 256") == 2  # the shipped cap, in both families
    text = text.replace("ct count over 256", f"ct count over {cap}")
    return text.replace("define TRACKER_PORT = 8080", f"define TRACKER_PORT = {port}")


def inside_namespace() -> None:
    """Runs in the new network namespace (see the test); prints its findings as JSON."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory() as tmp, RunningTracker(Path(tmp)) as tracker:
        rules = Path(tmp) / "rules.nft"
        rules.write_text(rules_for(tracker.port, CAP))
        subprocess.run(["nft", "-f", str(rules)], check=True)
        held, refused = [], 0
        for _ in range(TRIES):
            try:
                held.append(socket.create_connection(("127.0.0.1", tracker.port), timeout=5))
            except ConnectionRefusedError:
                refused += 1
        started = time.monotonic()
        other = socket.create_connection(
            ("127.0.0.1", tracker.port), timeout=5, source_address=("127.0.0.2", 0)
        )
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = other.recv(64)
        waited = time.monotonic() - started
        for sock in [*held, other]:
            sock.close()
    print(
        json.dumps(
            {"held": len(held), "refused": refused, "answer": answer.decode(), "waited": waited}
        )
    )


def test_one_address_is_capped_and_another_is_served(tmp_path):
    for tool in ("nft", "unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the Makefile installs nftables and iproute2")
    if os.geteuid() != 0:
        pytest.fail("a network namespace and nftables need root (CI and the Makefile run as root)")
    code = "from tests.test_tracker_connlimit import inside_namespace; inside_namespace()"
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'milter'}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["held"] == CAP and found["refused"] == TRIES - CAP, found
    assert found["answer"].startswith("HTTP/1.1 200"), found
    assert found["waited"] < 2, found
