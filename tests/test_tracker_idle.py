"""Idle connections on the tracker are closed after ``header_timeout`` (security review).

A connection that sent no complete request head within ``header_timeout`` is closed, whether
it sent nothing, half a head, or sits idle after a keep-alive response; and a crowd of idle
connections from one client cannot keep a real request waiting longer than that.
"""

from __future__ import annotations

import http.client
import select
import socket
import time

from .harness.smtpapi import RunningTracker

HEADER_TIMEOUT = 2
# More than Granian's default serves at once (backlog 1024 over the workers): a real request
# queued behind them forever, then (silent sockets timed out) for a header_timeout or two.
CROWD = 3000


def _closed_after(connections: dict[socket.socket, str], limit: float) -> dict[str, float]:
    """Seconds until the server closed each connection (EOF or reset), up to ``limit``."""
    started, pending, closed = time.monotonic(), dict(connections), {}
    while pending and time.monotonic() - started < limit:
        readable, _, _ = select.select(list(pending), [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[pending.pop(sock)] = time.monotonic() - started
    return closed


def test_silent_half_sent_and_idle_keepalive_connections_are_closed(tmp_path):
    with RunningTracker(tmp_path, engagement_tracker={"header_timeout": HEADER_TIMEOUT}) as tr:
        silent = socket.create_connection(("127.0.0.1", tr.port))
        half = socket.create_connection(("127.0.0.1", tr.port))
        half.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        idle = socket.create_connection(("127.0.0.1", tr.port))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        idle.settimeout(5)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # kept alive after this
        kinds = {silent: "sent nothing", half: "half a head", idle: "idle keep-alive"}
        closed = _closed_after(kinds, HEADER_TIMEOUT + 8)
        for sock in kinds:
            sock.close()
    assert set(closed) == set(kinds.values()), f"still open: {set(kinds.values()) - set(closed)}"
    assert all(seconds < HEADER_TIMEOUT + 3 for seconds in closed.values()), closed


def test_a_crowd_of_silent_connections_does_not_starve_a_real_request(tmp_path):
    with RunningTracker(tmp_path) as tr:  # default header_timeout (10 s)
        crowd = [socket.create_connection(("127.0.0.1", tr.port)) for _ in range(CROWD)]
        try:
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", tr.port, timeout=60)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            waited = time.monotonic() - started
            conn.close()
        finally:
            for sock in crowd:
                sock.close()
    assert waited < 3, f"a real request waited {waited:.1f} s behind {CROWD} silent sockets"
