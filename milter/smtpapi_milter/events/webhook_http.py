"""One webhook POST as SparkPost makes it: the batch body, its headers, a hard deadline.

The body is a JSON array of ``{"msys": {"<class>": event}}`` envelopes. Headers:
``Content-Type: application/json``, ``User-Agent: smtpapi-milter/<version>``,
``X-MessageSystems-Batch-ID`` (the same on every retry of a batch, for de-duplication),
``Authorization`` (``Basic`` or ``Bearer``) as configured, and, with ``hmac_secret`` set,
``X-Smtpapi-Signature: sha256=<hex>``: the HMAC-SHA256 of the exact body bytes keyed with
the secret (UTF-8). SparkPost signs nothing; receivers check it by recomputing the HMAC over
the raw body before parsing it and comparing in constant time.

The stdlib's http.client is enough (one POST per batch, no connection reuse worth having at
one batch per 30 s), so webhooks add no dependency. One deadline bounds the whole exchange:
name resolution and connect run under it (bounded_http), and a watchdog cuts the socket when
it passes, so a receiver that trickles bytes cannot hold a batch past the timeout either.
Only a complete 2xx answer counts as delivered: status line, headers and the whole body read
within the deadline. An answer cut off, by the watchdog or by the receiver, is a failure and
the batch is sent again (same batch id).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..config import WebhookConfig
from .bounded_http import CompleteResponse, Resolver, connect_within, read_to_end, wait_until
from .model import envelope

BATCH_ID_HEADER = "X-MessageSystems-Batch-ID"
SIGNATURE_HEADER = "X-Smtpapi-Signature"
USER_AGENT = f"smtpapi-milter/{__version__}"
_KEEP_OF_ANSWER = 200  # characters of a failed answer kept for the log
_KEEP_BYTES = 4 * _KEEP_OF_ANSWER  # bytes of the body decoded to find them


def batch_body(events: Sequence[dict[str, Any]]) -> bytes:
    """The POST body for ``events`` (flat store form): a JSON array of envelopes."""
    # ensure_ascii: stored events may hold lone surrogates, which UTF-8 cannot encode.
    return json.dumps([envelope(event) for event in events], separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Smtpapi-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_headers(hook: WebhookConfig, batch_id: str, body: bytes) -> dict[str, str]:
    """Every header of one POST of batch ``batch_id`` to ``hook``."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        BATCH_ID_HEADER: batch_id,
        "Connection": "close",
    }
    if hook.auth == "basic":
        pair = f"{hook.username}:{hook.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    elif hook.auth == "bearer":
        headers["Authorization"] = f"Bearer {hook.token}"
    if hook.hmac_secret:
        headers[SIGNATURE_HEADER] = signature(hook.hmac_secret, body)
    return headers


@dataclass(frozen=True)
class PostResult:
    """How one POST went: the HTTP status (None if no answer came) and what to log."""

    status: int | None
    detail: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Only a 2xx answer counts as delivered."""
        return self.status is not None and 200 <= self.status < 300


class Poster:
    """POSTs to one URL, each bounded by ``timeout`` seconds in all.

    ``abort()`` (from another thread) cuts the POST in progress, so a shutdown does not wait
    for a hanging receiver; the batch stays in flight and is sent again later.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolver = socket.getaddrinfo,
    ):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.resolve = resolve
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    def post(self, body: bytes, headers: dict[str, str]) -> PostResult:
        """Send one POST; never raises for network or HTTP trouble, it is in the result."""
        began = time.monotonic()
        deadline = began + self.timeout
        conn = self._connection(deadline)
        with self._lock:
            if self._aborted:
                return PostResult(None, "aborted", 0.0)
            self._conn = conn
        cut = threading.Event()
        watchdog = threading.Timer(self.timeout, self._cut, args=(conn, cut))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", self.target, body=body, headers=headers)
            wait_until(conn.sock, deadline)
            answer = conn.getresponse()
            text = read_to_end(answer, _KEEP_BYTES, deadline, conn.sock).decode("utf-8", "replace")
            if cut.is_set() or self._aborted:
                # The socket was shut down under the answer: what looked like its end (of a
                # body framed by the connection's close) may not have been.
                raise TimeoutError("cut before the answer was complete")
            detail = f"{answer.status} {answer.reason}: {text[:_KEEP_OF_ANSWER]}".rstrip(": ")
            return PostResult(answer.status, detail, time.monotonic() - began)
        except (OSError, http.client.HTTPException) as exc:
            spent = time.monotonic() - began
            if self._aborted:
                why = "aborted"
            elif spent >= self.timeout or cut.is_set():
                why = "timed out"
            else:
                why = f"{type(exc).__name__}: {exc}"
            return PostResult(None, why, spent)
        finally:
            watchdog.cancel()
            with self._lock:
                self._conn = None
            conn.close()

    def _connection(self, deadline: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.response_class = CompleteResponse
        # http.client resolves with an unbounded getaddrinfo; this one stops at the deadline.
        # (The TLS layer still checks the certificate against self.host.)
        conn._create_connection = lambda address, timeout, source: connect_within(  # type: ignore[method-assign]
            address[0], address[1], deadline, self.resolve
        )
        return conn

    def abort(self) -> None:
        """Cut the POST in progress, and refuse further ones."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None:
            self._cut(conn)

    @staticmethod
    def _cut(conn: http.client.HTTPConnection, cut: threading.Event | None = None) -> None:
        if cut is not None:
            cut.set()  # before the shutdown, so the reader sees it once its read returns
        # shutdown, not close: it wakes a thread blocked in recv on the socket at once.
        sock = conn.sock
        if sock is not None:
            # OSError: already closed by the other side or by the POST itself.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
