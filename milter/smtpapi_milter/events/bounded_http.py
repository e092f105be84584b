"""What a webhook POST needs beyond http.client: one deadline for the whole exchange, name
resolution included, and an answer that counts only when it arrived whole.

http.client is lenient where a delivery decision cannot be: it takes an end of file for the
blank line that ends the headers, and a short body read in pieces for a whole one. A receiver
that sent ``200 OK`` and was cut (by the watchdog, or by its own crash) would then count as
delivered and the batch would never be sent again. Here an answer is complete only if its
header block ended with its blank line and its body was read to the end its framing promises
(Content-Length, the last chunk, or the end of the connection when the answer has neither).

``getaddrinfo`` cannot be interrupted and ignores socket timeouts, so it runs in a thread of
its own that the caller stops waiting for at the deadline (the thread ends when the resolver
gives up on its own; it holds nothing but the lookup).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Resolver = Callable[..., list[tuple[Any, ...]]]  # socket.getaddrinfo's signature
READ_PIECE = 64 * 1024


class IncompleteAnswer(http.client.HTTPException):
    """The answer ended (or was cut) before its headers or body were complete."""


def resolve_within(host: str, port: int, seconds: float, resolve: Resolver) -> list[tuple]:
    """``resolve(host, port, 0, SOCK_STREAM)``, waiting at most ``seconds`` for it.

    TimeoutError when the resolver takes longer; its own OSError (gaierror) otherwise."""
    if _is_ip_literal(host):
        return resolve(host, port, 0, socket.SOCK_STREAM)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome["addresses"] = resolve(host, port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(max(0.0, seconds)):
        raise TimeoutError(f"resolving {host} took longer than the timeout")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["addresses"]


def connect_within(host: str, port: int, deadline: float, resolve: Resolver) -> socket.socket:
    """A TCP connection to ``host``, resolution and connect both ending by ``deadline``
    (time.monotonic()); the addresses are tried in the resolver's order."""
    addresses = resolve_within(host, port, deadline - time.monotonic(), resolve)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, sockaddr in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connecting to {host} took longer than the timeout")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _WatchedLines:
    """The response's file, remembering the last line read (see CompleteResponse)."""

    def __init__(self, fp: Any):
        self._fp = fp
        self.last_line = b""

    def readline(self, limit: int = -1) -> bytes:
        self.last_line = self._fp.readline(limit)
        return self.last_line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class CompleteResponse(http.client.HTTPResponse):
    """An HTTPResponse that raises IncompleteAnswer when the connection ended inside the
    header block (http.client alone returns the status with the headers read so far)."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp = _WatchedLines(self.fp)

    def begin(self) -> None:
        watched = self.fp
        super().begin()
        if watched.last_line not in (b"\r\n", b"\n"):
            raise IncompleteAnswer("the answer ended before the end of its headers")


def read_to_end(
    answer: http.client.HTTPResponse, keep: int, deadline: float, sock: socket.socket | None
) -> bytes:
    """Read the whole body by ``deadline`` (time.monotonic()), returning its first ``keep``
    bytes; TimeoutError past the deadline, IncompleteAnswer (or http.client's IncompleteRead,
    a sibling) if the connection ended before the body did.

    Every read waits at most until the deadline, and takes what has arrived (read1), so a
    body trickled in small pieces cannot outlast it."""
    kept = bytearray()
    while True:
        wait_until(sock, deadline)
        piece = answer.read1(READ_PIECE)
        if not piece:
            break
        if len(kept) < keep:
            kept += piece[: keep - len(kept)]
    # Reading in pieces, http.client lets a short Content-Length body end quietly; what it
    # still expected is left in ``length``.
    if answer.length:
        raise IncompleteAnswer(f"the answer's body ended {answer.length} bytes short")
    return bytes(kept)


def wait_until(sock: socket.socket | None, deadline: float) -> None:
    """Let the next operation on ``sock`` wait no later than ``deadline``; TimeoutError if
    it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the deadline passed")
    if sock is not None:
        sock.settimeout(remaining)
