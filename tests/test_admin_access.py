"""The admin listener is never open (security review, issue 15 item 8), over real HTTP.

With the default configuration (no ``admin_token``) any local user could read every event
and erase recipients on 127.0.0.1:8081, and a web page could do the same through DNS
rebinding. Now a token is always required (generated on first start unless configured) and
a request must name the listener in its ``Host`` header.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import sys
import uuid

import pytest

from .harness.smtpapi import ROOT, RunningTracker

EVENTS = "/api/v1/events?limit=10"


def request(
    port: int, path: str, method: str = "GET", token: str | None = None, host: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host:
            conn.putheader("Host", host)
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """A tracker on defaults: no admin_token configured, so it makes its own."""
    with RunningTracker(tmp_path_factory.mktemp("admin-access")) as running:
        yield running


def test_no_token_is_refused_on_loopback_too(tracker):
    status, body = request(tracker.admin_port, EVENTS)
    assert status == 401, body
    status, _ = request(tracker.admin_port, "/api/v1/recipients/a%40example.org/events", "DELETE")
    assert status == 401
    assert request(tracker.admin_port, "/metrics")[0] == 401
    assert request(tracker.admin_port, EVENTS, token="not-the-token")[0] == 401
    status, body = request(tracker.admin_port, EVENTS, token=tracker.admin_token)
    assert status == 200 and json.loads(body)["results"] == []


def test_token_file_is_made_private_on_first_start(tracker):
    info = (tracker.workdir / "state" / "admin-token").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()  # the user the tracker runs as (the service user)
    assert len(tracker.admin_token) >= 40  # 32 random bytes, base64url


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        "10.0.0.1:{port}",
        "127.0.0.1:{port}@evil.example",
        "[::1]evil.example",
    ],
)
def test_a_host_that_is_not_ours_gets_421_even_with_the_token(tracker, host):
    # What a DNS-rebinding page's requests look like: our address, the attacker's name.
    host = host.format(port=tracker.admin_port)
    for path in (EVENTS, "/healthz", "/dashboard/"):
        status, body = request(tracker.admin_port, path, token=tracker.admin_token, host=host)
        assert status == 421, (path, host, body)


def test_no_host_header_gets_421(tracker):
    status, _ = request(tracker.admin_port, EVENTS, token=tracker.admin_token, host="")
    assert status == 421


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "127.0.0.1",
        "[::1]:{port}",
        "localhost:{port}",
        "LocalHost.",
    ],
)
def test_loopback_literals_are_served(tracker, host):
    host = host.format(port=tracker.admin_port)
    status, body = request(tracker.admin_port, EVENTS, token=tracker.admin_token, host=host)
    assert status == 200, (host, body)
    assert request(tracker.admin_port, "/healthz", host=host)[0] == 200


def test_admin_hosts_names_are_served(tmp_path):
    hosts = {"admin_hosts": ["admin.example.internal"]}
    with RunningTracker(tmp_path, engagement_tracker=hosts) as tracker:
        for host in ("admin.example.internal", "ADMIN.example.internal:443"):
            status, _ = request(tracker.admin_port, EVENTS, token=tracker.admin_token, host=host)
            assert status == 200, host
        host = "admin.example.internal.evil.example"
        assert request(tracker.admin_port, EVENTS, token=tracker.admin_token, host=host)[0] == 421


def test_the_token_file_is_reused_on_restart(tmp_path):
    tracker = RunningTracker(tmp_path)
    with tracker:
        first = tracker.admin_token
        inode = (tmp_path / "state" / "admin-token").stat().st_ino
    with tracker:
        assert tracker.admin_token == first
        assert (tmp_path / "state" / "admin-token").stat().st_ino == inode
        assert request(tracker.admin_port, EVENTS, token=first)[0] == 200


def test_a_configured_token_wins(tmp_path):
    token = uuid.uuid4().hex
    with RunningTracker(tmp_path, engagement_tracker={"admin_token": token}) as tracker:
        assert request(tracker.admin_port, EVENTS, token=token)[0] == 200
        assert request(tracker.admin_port, EVENTS)[0] == 401
        assert not (tmp_path / "state" / "admin-token").exists()


def check(config) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_check_names_the_token_file_and_refuses_one_others_can_read(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n'
        '[engagement_tracker]\nadmin_listen = "0.0.0.0:8081"\n'
    )
    path = tmp_path / "state" / "admin-token"
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert f"# admin token: file {path} (created on first start)" in result.stdout
    path.parent.mkdir()
    path.write_text("x" * 43 + "\n")
    path.chmod(0o640)
    result = check(config)
    assert result.returncode == 3
    assert str(path) in result.stderr and "chmod 600" in result.stderr
    path.chmod(0o600)
    assert f"# admin token: file {path}\n" in check(config).stdout


def test_check_refuses_an_admin_host_with_a_port(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[policy]\ndirectory = "{tmp_path}"\n'
        '[engagement_tracker]\nadmin_hosts = ["admin.example:8081"]\n'
    )
    result = check(config)
    assert result.returncode == 3
    assert "'engagement_tracker.admin_hosts[0]'" in result.stderr and str(config) in result.stderr
