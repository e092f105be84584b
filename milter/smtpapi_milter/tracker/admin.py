"""The admin listener: the events API (and the dashboard, which is its client).

Served on ``[engagement_tracker] admin_listen`` (default 127.0.0.1:8081), apart from the
public tracker: events carry recipients' addresses, so this listener is for the operator's
network only. Every request must name this listener in ``Host`` (else 421) and, but for
``/healthz`` and the dashboard's own files, carry the bearer token (else 401); see
:mod:`.admin_access` for both rules and where the token comes from.

Routes (JSON unless said otherwise):

- ``GET /api/v1/events?type=&campaign=&rcpt=&since=&until=&after=&limit=`` — flat events,
  oldest first, ``{"results": [...], "next_after": ID|null}``; pass ``after=next_after`` for
  the next page. ``type`` may repeat or hold a comma list; times as in ``events.query``.
- ``DELETE /api/v1/recipients/{address}/events`` — erase one recipient's events and keep
  later ones out (privacy requests, events/erasure.py): ``{"deleted": N}``; 400 for an
  empty or malformed address.
- ``GET /healthz``; ``GET /metrics`` (Prometheus text: webhook delivery counters, and the
  public listener's tracking requests summed over its workers, see ``metrics``).

The dashboard (:mod:`.dashboard`) adds its page under ``/dashboard/`` and its report routes
(``/api/v1/campaigns...``, ``/api/v1/tags``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from ..events.erasure import NotAnAddress, erasable_address
from ..events.query import EventQuery, QueryError
from ..events.store import EventStore, LazyStore, StoreUnavailable
from . import metrics
from .admin_access import AllowedHosts
from .asgi import Receive, Scope, Send

Handler = Callable[["Request"], Awaitable[tuple[int, Any]]]


class Request:
    """What a handler needs of one request: method, path, query parameters, the store."""

    def __init__(self, scope: Scope, store: EventStore | LazyStore, receive: Receive | None = None):
        self.method: str = scope["method"]
        self.receive = receive  # for the routes that read a request body
        self.path: str = scope["path"]
        # Still percent-encoded: a value in the path may itself contain an encoded "/".
        self.raw_path: str = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        self._store = store
        self.query: dict[str, list[str]] = parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=False
        )

    @property
    def store(self) -> EventStore:
        """The event store (opening it may block: use it inside ``in_thread``)."""
        return self._store.get() if isinstance(self._store, LazyStore) else self._store

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    async def in_thread(self, work: Callable[[], Any]) -> Any:
        """Run blocking store work off the event loop."""
        return await asyncio.to_thread(work)


class AdminApp:
    """ASGI app for the admin listener. Further routes (the dashboard) register themselves."""

    def __init__(self, store: EventStore | LazyStore, token: str, allowed_hosts: AllowedHosts):
        if not token:
            raise ValueError("the admin listener needs a token")
        self.store = store
        self._token = token.encode()
        self._allowed_hosts = allowed_hosts
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v1/events"): events_page,
            ("GET", "/healthz"): healthz,
        }
        # Prefix routes: (method, prefix) -> handler, for paths that carry a value.
        self.prefix_routes: dict[tuple[str, str], Handler] = {
            ("DELETE", "/api/v1/recipients/"): erase_recipient,
        }
        self.raw_routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            "/metrics": metrics_page,
        }
        # Paths served without the token: health checks, and the dashboard's own files (code,
        # no data; the page then asks for the token and sends it with every API call).
        self.public_paths: set[str] = {"/healthz"}

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given, self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if not self._allowed_hosts(scope["headers"]):
            await send_json(send, 421, {"error": "this listener does not answer to that Host"})
            return
        if path not in self.public_paths and not self._authorized(scope):
            await send_json(send, 401, {"error": "bearer token required"}, auth=True)
            return
        raw = self.raw_routes.get(path)
        if raw is not None:
            await raw(scope, receive, send)
            return
        handler = self._route(scope["method"], path)
        if handler is None:
            await send_json(send, 404, {"error": f"no such endpoint: {scope['method']} {path}"})
            return
        try:
            status, body = await handler(Request(scope, self.store, receive))
        except QueryError as exc:
            status, body = 400, {"error": str(exc)}
        except StoreUnavailable as exc:
            status, body = 503, {"error": f"event store unavailable: {exc}"}
        await send_json(send, status, body)

    def _route(self, method: str, path: str) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler
        for (route_method, prefix), prefix_handler in self.prefix_routes.items():
            if method == route_method and path.startswith(prefix):
                return prefix_handler
        return None


async def send_json(send: Send, status: int, body: Any, auth: bool = False) -> None:
    """A JSON response (compact, UTF-8, never cached)."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if auth:
        headers.append((b"www-authenticate", b'Bearer realm="smtpapi-milter"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def metrics_page(scope: Scope, receive: Receive, send: Send) -> None:
    body, content_type = metrics.exposition()
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def healthz(request: Request) -> tuple[int, Any]:
    try:
        await request.in_thread(lambda: request.store.ping())
    except StoreUnavailable as exc:
        return 503, {"status": "event store unavailable", "error": str(exc)}
    return 200, {"status": "ok"}


async def events_page(request: Request) -> tuple[int, Any]:
    query = EventQuery.from_text(
        types=request.query.get("type"),
        campaign=request.param("campaign"),
        rcpt=request.param("rcpt"),
        since=request.param("since"),
        until=request.param("until"),
        after=request.param("after"),
        limit=request.param("limit"),
    )
    rows = await request.in_thread(lambda: query.run(request.store))
    next_after = rows[-1][0] if len(rows) == query.limit else None
    return 200, {"results": [event for _, event in rows], "next_after": next_after}


async def erase_recipient(request: Request) -> tuple[int, Any]:
    rest = request.path[len("/api/v1/recipients/") :]
    address, _, tail = rest.rpartition("/")
    if tail != "events" or not address:
        return 404, {"error": "use DELETE /api/v1/recipients/{address}/events"}
    try:
        erased = erasable_address(unquote(address))
    except NotAnAddress as exc:
        return 400, {"error": str(exc)}
    deleted = await request.in_thread(lambda: request.store.erase_recipient(erased))
    return 200, {"deleted": deleted}
