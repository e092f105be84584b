"""The engagement dashboard: a static page on the admin listener, a client of our own API.

Everything it needs ships in this package (``static/``): no CDN, no web fonts, nothing from
the internet, since mail servers often have no way out. Charts are plain SVG drawn by
``static/charts.js``. The page is at ``/dashboard/`` and reads the JSON routes of
:mod:`.api`; it asks for the admin token once (the listener always has one, see
:mod:`..admin_access`) and sends it as a bearer token, so the files themselves are served
without it (they hold code, no data).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

from ..admin import AdminApp
from ..asgi import Receive, Scope, Send
from . import api

PREFIX = "/dashboard/"
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
# The page runs only its own files and talks only to its own origin; nobody may frame it.
_SECURITY = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
RawHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


def _static_file(body: bytes, content_type: bytes) -> RawHandler:
    etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD")], b"")
            return
        headers = [(b"content-type", content_type), (b"etag", etag), *_SECURITY]
        # Revalidate every time (a 304 costs nothing), so an upgrade is seen at once.
        headers.append((b"cache-control", b"no-cache"))
        if any(k == b"if-none-match" and etag in v for k, v in scope["headers"]):
            await _respond(send, 304, headers, b"")
            return
        await _respond(send, 200, headers, b"" if scope["method"] == "HEAD" else body, len(body))

    return serve


async def _to_index(scope: Scope, receive: Receive, send: Send) -> None:
    # Relative, so the page also works behind a proxy that mounts it under a longer path.
    await _respond(send, 308, [(b"location", b"dashboard/")], b"")


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, length: int = -1
) -> None:
    size = len(body) if length < 0 else length
    headers = [*headers, (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def static_files() -> dict[str, bytes]:
    """The dashboard's files by name, read from the installed package."""
    folder = resources.files(__package__) / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


def install(app: AdminApp) -> AdminApp:
    """Add the dashboard's page, files and API routes to the admin app."""
    for name, body in static_files().items():
        content_type = _TYPES.get(name[name.rfind(".") :], b"application/octet-stream")
        handler = _static_file(body, content_type)
        path = PREFIX if name == "index.html" else f"{PREFIX}static/{name}"
        app.raw_routes[path] = handler
        app.public_paths.add(path)
    app.raw_routes["/dashboard"] = _to_index
    app.public_paths.add("/dashboard")
    app.routes[("GET", api.CAMPAIGNS)] = api.campaigns
    app.routes[("GET", "/api/v1/tags")] = api.tags
    app.routes[("GET", api.FLOODS)] = api.flooded_tokens
    app.prefix_routes[("GET", api.CAMPAIGNS + "/")] = api.campaign_detail
    return app
