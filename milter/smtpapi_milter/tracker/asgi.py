"""What the public listener's routes share: ASGI types, reading a request header, sending a
response, and the headers and 404 page every route answers with alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

NO_STORE = (b"cache-control", b"no-store, no-cache, must-revalidate, private")
HTML = (b"content-type", b"text/html; charset=utf-8")

# A tampered, truncated or unknown token: the same page whatever the route, never a redirect.
NOT_FOUND_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Link not found</title></head>"
    b"<body><h1>This link is not valid</h1><p>It may have been copied incompletely. Please "
    b"use the link in the original message.</p></body></html>\n"
)


def header(scope: Scope, name: bytes) -> bytes:
    """The first value of request header ``name`` (lower-case, as ASGI gives it), or b""."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


async def respond(
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    method: str,
    length_set: bool = False,
) -> None:
    """Send one whole response; HEAD gets the headers (Content-Length included), no body."""
    if not length_set and not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
