"""The public tracker served through Granian's RSGI interface, ASGI's TrackerApp behind it.

Why: a bare 302 under Granian costs ~13 us more CPU over ASGI than over RSGI (51.5k against
37.4k requests/s on this machine, bench/tracker_bench.py): ASGI builds a scope dict with
every header as a bytes pair, and the response takes two ``send`` awaits, each message a dict
Granian reads back. RSGI hands over a scope object read lazily and takes the whole response
in one call. The hot routes (GET and HEAD of /c/, /o/, /i/) are answered here from
:meth:`TrackerApp.track`, the one decision both interfaces share; everything else (/u/ and its
POST bodies, /healthz, 404, 405) goes to the ASGI app itself through :func:`serve_asgi`, a
small ASGI-over-RSGI adapter. The responses are the same bytes on the wire either way
(tests/test_tracker_rsgi.py holds them equal).

What RSGI does not give, and what the tracker does instead:

- Header values with a byte outside visible ASCII (obs-text: a User-Agent with "é" in
  UTF-8 or Latin-1, say). Granian's RSGI headers skip such a value (``get`` answers None,
  ``items`` leaves it out, ``in`` still says the header is there) and it has no raw access;
  ASGI gives the bytes. Such a first value reads here as the one byte 0xFF, a byte we cannot
  see: a User-Agent of U+FFFD is stored (what ASGI's UTF-8 decoding stored for an unreadable
  byte, rather than "" as if none were sent), and an X-Forwarded-For from a trusted proxy
  counts as "not an address", so the client is the connecting proxy (ClientAddress).
- The raw path. RSGI's path is percent-decoded once (invalid UTF-8 as U+FFFD), which is what
  the token decoder does to ASGI's raw path; a token is therefore re-quoted when it still has
  a "%" (decoding twice would accept "%2541" as "A"). A path whose route prefix itself is
  percent-encoded ("/%63/TOKEN") is routed as "/c/TOKEN" here; under ASGI its token was
  "3/TOKEN", a 404.

Lifespan: the recorder and the store start once per worker as the first callback of its loop
(scheduled by ``__rsgi_init__``, which Granian calls before the loop runs) and stop in
``__rsgi_del__`` after the last request on SIGTERM, as ASGI's lifespan protocol did (server.py).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import structlog

from . import worker_stop
from .app import (
    PIXEL,
    PIXEL_HEADERS,
    REDIRECT_HEADERS,
    TRACKING_PATHS,
    UNAVAILABLE_HEADERS,
    UNAVAILABLE_PAGE,
    Answer,
    ClientAddress,
    TrackerApp,
)
from .asgi import HTML, NO_STORE, NOT_FOUND_PAGE

log = structlog.get_logger("smtpapi_milter.tracker")

# A header value RSGI does not show (see the module's docstring): a byte nobody can read.
UNREADABLE = b"\xff"
UNREADABLE_AGENT = UNREADABLE.decode("utf-8", "replace")  # as ASGI's decoding reads it

GC_THRESHOLD = 7000  # container allocations between young-generation collections


def _text(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("ascii"), value.decode("ascii")) for name, value in headers]


def _whole(headers: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[str, str]]:
    return _text([*headers, (b"content-length", str(len(body)).encode())])


# The responses of track's answers: app.py's, as RSGI takes them.
_ANSWERS = {
    Answer.PIXEL: (200, _text(PIXEL_HEADERS), PIXEL),
    Answer.NOT_FOUND: (404, _whole([HTML, NO_STORE], NOT_FOUND_PAGE), NOT_FOUND_PAGE),
    Answer.UNAVAILABLE: (503, _whole(UNAVAILABLE_HEADERS, UNAVAILABLE_PAGE), UNAVAILABLE_PAGE),
}
_REDIRECT_HEADERS = _text(REDIRECT_HEADERS)


def header(scope: Any, name: bytes) -> bytes:
    """The first value of request header ``name`` (lower-case), b"" if none,
    :data:`UNREADABLE` if RSGI does not show it."""
    text = name.decode("ascii")
    headers = scope.headers
    value = headers.get(text)
    if value is None:
        return UNREADABLE if text in headers else b""
    return value.encode("ascii")  # RSGI only shows visible ASCII


def peer(client: str) -> str:
    """The address of RSGI's ``client`` ("1.2.3.4:5", "[::1]:5"), as ASGI's ``client[0]``
    (an IPv6 zone, "[fe80::1%2]:5", is not part of it)."""
    host = client.rpartition(":")[0]
    return host[1:-1].partition("%")[0] if host.startswith("[") else host


class RsgiRequests:
    """:class:`~.app.RequestReader` of RSGI scopes."""

    def __init__(self, client_address: ClientAddress):
        self._client_address = client_address

    def address(self, scope: Any) -> str:
        return self._client_address.resolve(peer(scope.client), header, scope)

    @staticmethod
    def user_agent(scope: Any) -> str:
        headers = scope.headers
        agent = headers.get("user-agent")
        if agent is None:
            return UNREADABLE_AGENT if "user-agent" in headers else ""
        return agent


def token_of(path: str) -> str:
    """The token after /c/, /o/, /i/ in RSGI's (decoded) path, as the decoder expects it: it
    percent-decodes once more, which a token with a "%" left must not go through."""
    token = path[3:]
    return quote(token) if "%" in token else token


class RsgiTracker:
    """The RSGI application of ``[engagement_tracker] listen``: the hot routes answered
    here, the rest by the ASGI app ``startup`` returns."""

    def __init__(self, startup: Callable[[], TrackerApp], shutdown: Callable[[], None]):
        self._startup = startup
        self._shutdown = shutdown
        self.app: TrackerApp | None = None
        self._requests: RsgiRequests | None = None
        self._loop: Any = None  # the worker's event loop, as __rsgi_init__ is given it

    def __rsgi_init__(self, loop: Any) -> None:
        # Not here: Granian 2.8.9 calls this before its loop runs, and a worker that gets
        # SIGTERM while in it never ends (the signal is lost; reproduced with a bare app that
        # sleeps here). So the start-up (store, journal recovery) runs as the loop's first
        # callback, where ASGI's lifespan ran it, and a signal during it is handled after it.
        self._loop = loop
        worker_stop.hold()  # a SIGTERM now would be lost: noted, and sent again by _start
        loop.call_soon(self._start)

    def _start(self) -> None:
        if self.app is not None:
            return
        # A SIGTERM that came before the loop listened for it (worker_stop.py), sent again
        # now that the loop runs and takes it: the worker then stops as it should.
        worker_stop.resend_lost_stop()
        try:
            app = self._startup()
        except Exception:
            log.exception("tracker failed to start")
            os._exit(3)  # the worker ends; Granian starts another
        self._requests = RsgiRequests(app.client_address)
        app.loop = self._loop
        self.app = app
        # The cyclic GC ran every 700 net container allocations, which a click's events
        # (dicts and lists alive until their group is journaled and indexed) reach every few
        # clicks: 1.3 us a click of collections that found next to nothing (gc.callbacks,
        # bench/tracker_cpu.py --rsgi), 0.2 us at 7000. What start-up built (ua-parser's
        # regexes, the codec, modules) lives as long as the worker: frozen, no collection
        # walks it again (collected first, so that no garbage of the start-up is kept).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    def __rsgi_del__(self, loop: Any) -> None:
        if self.app is not None:
            self._shutdown()

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if self.app is None:  # a request scheduled before the start-up callback
            self._start()
        path = scope.path
        kind = TRACKING_PATHS.get(path[:3])
        method = scope.method
        if kind is None or (method != "GET" and method != "HEAD"):
            await serve_asgi(self.app, scope, protocol)
            return
        answer = await self.app.track(kind, token_of(path), method, scope, self._requests)
        if answer.__class__ is str:
            protocol.response_empty(302, [("location", answer), *_REDIRECT_HEADERS])
            return
        status, headers, body = _ANSWERS[answer]
        if method == "HEAD":  # the headers of GET, Content-Length included, no body
            protocol.response_empty(status, headers)
        else:
            protocol.response_bytes(status, headers, body)


def asgi_scope(scope: Any) -> dict[str, Any]:
    """The ASGI HTTP scope of an RSGI request (see the module's docstring for what differs)."""
    path = scope.path
    client_host, _, client_port = scope.client.rpartition(":")
    server_host, _, server_port = scope.server.rpartition(":")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": path,
        # Quoted again, so that the token decoder's percent-decoding gives the path back.
        "raw_path": quote(path).encode("ascii"),
        "query_string": scope.query_string.encode("ascii"),
        "root_path": "",
        "headers": asgi_headers(scope.headers),
        "client": (peer(scope.client), int(client_port)) if client_host else None,
        "server": (peer(scope.server), int(server_port)) if server_host else None,
    }


def asgi_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """RSGI's headers as ASGI's pairs; a name whose first value RSGI does not show starts
    with :data:`UNREADABLE` (the values after it that RSGI shows follow)."""
    pairs = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
    unreadable = [
        (name.encode("ascii"), UNREADABLE) for name in headers if headers.get(name) is None
    ]
    return unreadable + pairs


async def serve_asgi(app: Any, scope: Any, protocol: Any) -> None:
    """Run ASGI ``app`` on an RSGI request: the body streamed to ``receive`` chunk by chunk
    (a handler that reads a few KiB of a huge body reads no more), the response collected
    from ``send`` and written in one call."""
    body: Any = None  # the body stream, opened by the first receive
    ended = False
    status = 0
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal body, ended
        if ended:
            await protocol.client_disconnect()
            return {"type": "http.disconnect"}
        if body is None:
            body = aiter(protocol)
        try:
            chunk = await anext(body)
        except StopAsyncIteration:
            chunk = b""
        # Granian's body stream gives b"" at its end (also after a read error).
        ended = not chunk
        return {"type": "http.request", "body": bytes(chunk), "more_body": not ended}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers, done
        if done:
            raise RuntimeError("ASGI message after the response was complete")
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = _text(list(message.get("headers", [])))
        elif message["type"] == "http.response.body":
            if not status:
                raise RuntimeError("ASGI response body before its start")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done = True
                content = b"".join(chunks)
                if content:
                    protocol.response_bytes(status, headers, content)
                else:
                    protocol.response_empty(status, headers)

    await app(asgi_scope(scope), receive, send)
    if not done:
        raise RuntimeError("ASGI app returned without a complete response")
