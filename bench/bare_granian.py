"""The tracker benchmark's floor: a bare Python app under Granian answering a fixed 302.

No token, no event, no routing: what Python under the same server and the same worker count
can answer at best. Both of Granian's Python interfaces are here so the benchmark can name the
fastest: ``rsgi`` (Granian's own, a response in one call) and ``asgi`` (two ``send`` calls,
message dicts). Served by ``tracker_bench.py`` with ``granian --interface rsgi|asgi``.
"""

from __future__ import annotations

TARGET = "https://www.example.com/articles/1?utm_source=newsletter&utm_medium=email"
_HEADERS = [
    ("location", TARGET),
    ("cache-control", "no-store, no-cache, must-revalidate, private"),
    ("referrer-policy", "no-referrer"),
    ("content-length", "0"),
]
_ASGI_START = {
    "type": "http.response.start",
    "status": 302,
    "headers": [(name.encode(), value.encode()) for name, value in _HEADERS],
}
_ASGI_BODY = {"type": "http.response.body", "body": b""}


class RSGIApp:
    """``granian --interface rsgi bench.bare_granian:rsgi``."""

    async def __rsgi__(self, scope, protocol) -> None:
        protocol.response_empty(302, _HEADERS)


rsgi = RSGIApp()


async def asgi(scope, receive, send) -> None:
    """``granian --interface asgi bench.bare_granian:asgi``."""
    if scope["type"] != "http":
        return
    await send(_ASGI_START)
    await send(_ASGI_BODY)
