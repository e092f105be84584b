"""Loopback ports for servers the tests start, and readiness probes with a deadline.

Servers we cannot hand a bound socket to (Postfix's master binds its own listeners) need a
port number chosen in advance. Picking one is racy by nature, so the choice avoids the
kernel's ephemeral range (where every outgoing connection takes its source port) and never
hands the same port out twice in one process. Readiness is always probed — a connect, or an
SMTP greeting read — until a deadline, never assumed after a fixed sleep.

Deadlines are absolute ``time.monotonic()`` values, so one deadline can bound several
waits in a row; ``deadline_in(seconds)`` makes one.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

LOOPBACK = "127.0.0.1"
PROBE_INTERVAL = 0.02  # between probes: short, so readiness is seen within a few ms
# Below Linux's default ip_local_port_range (32768-60999) and above well-known services.
_PORT_RANGE = (20000, 32767)
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def deadline_in(seconds: float) -> float:
    """The ``time.monotonic()`` value ``seconds`` from now, for the ``deadline`` arguments."""
    return time.monotonic() + seconds


def _check_deadline(deadline: float) -> None:
    # A timeout passed where a deadline belongs (say 5.0) lies in the monotonic past and
    # would make every wait fail at once: say so instead of timing out mysteriously.
    if deadline < time.monotonic() - 1.0:
        raise ValueError(
            f"deadline {deadline} is in the past: pass time.monotonic() + seconds "
            "(deadline_in(seconds)), not a timeout"
        )


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` now (a port a user pinned, say)."""
    return _bindable(host, port)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on now and this process has not handed out.

    Someone else may still take it before the caller binds it; callers that can retry on
    "address in use" should.
    """
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randint(*_PORT_RANGE)
        with _handed_out_lock:
            if port in _handed_out or not _bindable(host, port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port found on {host} in {_PORT_RANGE}")


def wait_for_port(host: str, port: int, deadline: float) -> None:
    """Return once a TCP connect to ``host:port`` succeeds; ``TimeoutError`` at ``deadline``."""
    _check_deadline(deadline)
    last_error: OSError | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing listening on {host}:{port}: {last_error}")
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 1.0)):
                return
        except OSError as exc:
            last_error = exc
        time.sleep(PROBE_INTERVAL)


def wait_for_http(url: str, deadline: float, process: Any = None) -> None:
    """Return once ``url`` answers 200; ``TimeoutError`` at ``deadline`` (or when
    ``process``, a Popen, has exited: it will never answer)."""
    _check_deadline(deadline)
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (process is not None and process.poll() is not None):
            raise TimeoutError(f"{url} did not answer 200: {last_error}")
        try:
            with urllib.request.urlopen(url, timeout=min(remaining, 2.0)) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # an answer, not 200 (yet): its socket closed
            exc.close()
            last_error = exc
        except (OSError, urllib.error.URLError) as exc:
            last_error = exc
        time.sleep(PROBE_INTERVAL)


def wait_for_unix_socket(path: str | os.PathLike[str], deadline: float) -> None:
    """Return once a stream connect to the unix socket ``path`` succeeds; ``TimeoutError``
    at ``deadline``."""
    _check_deadline(deadline)
    last_error: OSError | None = None
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(os.fspath(path))
                return
            except OSError as exc:
                last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {path}: {last_error}")
        time.sleep(PROBE_INTERVAL)


def _read_greeting(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as conn:
        reply = b""
        # A multi-line greeting ends with the line whose fourth character is a space.
        while not _complete_reply(reply):
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {reply!r}")
            reply += chunk
        # The greeting is what we came for; a server that already hung up is its business.
        with contextlib.suppress(OSError):
            conn.sendall(b"QUIT\r\n")
    return reply.decode("latin-1").rstrip("\r\n")


def _complete_reply(reply: bytes) -> bool:
    lines = reply.split(b"\r\n")
    return len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" "


def wait_for_smtp_banner(host: str, port: int, deadline: float, code: str = "220") -> str:
    """Return the greeting of the SMTP server on ``host:port`` once it starts with ``code``.

    Connection refusals and other greetings (a 421 while a server is still starting) are
    probed again until ``deadline``, then ``TimeoutError`` names the last answer seen.
    """
    _check_deadline(deadline)
    last: str | Exception = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {code} greeting from {host}:{port}; last: {last!r}")
        try:
            greeting = _read_greeting(host, port, timeout=min(remaining, 2.0))
        except OSError as exc:
            last = exc
        else:
            if greeting.startswith(code):
                return greeting
            last = greeting
        time.sleep(PROBE_INTERVAL)
