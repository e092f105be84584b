"""The suppression list's admin API, SparkPost's routes (SPEC 14).

On the admin listener, with its Host check and bearer token like every admin route:

- ``GET /api/v1/suppression-list?source=&type=&search=&limit=&after=`` — entries in recipient
  order, ``{"results": [...], "next_after": CURSOR|null}``; ``search`` matches part of the
  recipient or the description; ``limit`` 1..10000 (default 1000).
- ``GET /api/v1/suppression-list/{recipient}`` — the recipient's entries (one per type), 404
  when it has none.
- ``PUT /api/v1/suppression-list/{recipient}`` with ``{"type": ..., "description": ...}`` (both
  optional; type defaults to non_transactional, as SparkPost's) — add or update one entry,
  source ``manual``; answers the entry.
- ``DELETE /api/v1/suppression-list/{recipient}`` (``?type=`` or ``{"type": ...}`` for one type)
  — ``{"deleted": N}``, 404 when there was nothing to delete (SparkPost answers 204; a body
  saying how many went is more use and every client takes a 2xx).

Entries are SparkPost's objects (suppression/formats.py): times in ISO 8601.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from ..suppression import formats
from ..suppression.store import (
    DEFAULT_LIMIT,
    SuppressionError,
    list_entries,
    normalize_recipient,
    suppress,
    unsuppress,
)
from .admin import AdminApp, Request

LIST = "/api/v1/suppression-list"
MAX_LIMIT = 10_000
MAX_BODY = 64 * 1024


def install(app: AdminApp) -> AdminApp:
    app.routes[("GET", LIST)] = list_page
    for method, handler in (("GET", get_entry), ("PUT", put_entry), ("DELETE", delete_entry)):
        app.prefix_routes[(method, LIST + "/")] = handler
    return app


async def list_page(request: Request) -> tuple[int, Any]:
    try:
        limit = int(request.param("limit") or DEFAULT_LIMIT)
    except ValueError:
        return 400, {"error": f"limit {request.param('limit')!r} is not a whole number"}
    if not 1 <= limit <= MAX_LIMIT:
        return 400, {"error": f"limit {limit} is not between 1 and {MAX_LIMIT}"}
    try:
        entries = await request.in_thread(
            lambda: list_entries(
                request.store,
                source=request.param("source"),
                type=request.param("type"),
                search=request.param("search"),
                limit=limit,
                after=request.param("after"),
            )
        )
    except SuppressionError as exc:
        return 400, {"error": str(exc)}
    next_after = entries[-1].cursor if len(entries) == limit else None
    return 200, {"results": [formats.api_object(e) for e in entries], "next_after": next_after}


def _recipient(request: Request) -> str:
    """The path's recipient (percent-decoded, checked, lower-cased) or SuppressionError."""
    return normalize_recipient(unquote(request.raw_path[len(LIST) + 1 :]))


async def _body(request: Request) -> dict[str, Any]:
    data = b""
    while request.receive is not None:
        message = await request.receive()
        data += message.get("body", b"")
        if len(data) > MAX_BODY:
            raise SuppressionError(f"request body larger than {MAX_BODY} bytes")
        if not message.get("more_body"):
            break
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SuppressionError(f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SuppressionError("request body must be a JSON object")
    return body


def _text_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise SuppressionError(f"{name} must be a string, not {value!r:.50}")
    return value


async def get_entry(request: Request) -> tuple[int, Any]:
    try:
        recipient = _recipient(request)
    except SuppressionError as exc:
        return 400, {"error": str(exc)}
    entries = await request.in_thread(
        lambda: list_entries(request.store, recipient=recipient, limit=None)
    )
    if not entries:
        return 404, {"error": f"{recipient} is not on the suppression list"}
    return 200, {"results": [formats.api_object(e) for e in entries]}


async def put_entry(request: Request) -> tuple[int, Any]:
    try:
        recipient = _recipient(request)
        body = await _body(request)
        kind = _text_field(body, "type") or "non_transactional"
        description = _text_field(body, "description") or ""

        def work() -> list[Any]:
            suppress(request.store, recipient, type=kind, description=description)
            return list_entries(request.store, recipient=recipient, type=kind, limit=None)

        entries = await request.in_thread(work)
    except SuppressionError as exc:
        return 400, {"error": str(exc)}
    return 200, {"results": [formats.api_object(e) for e in entries]}


async def delete_entry(request: Request) -> tuple[int, Any]:
    try:
        recipient = _recipient(request)
        kind = request.param("type") or _text_field(await _body(request), "type")
        deleted = await request.in_thread(lambda: unsuppress(request.store, recipient, kind))
    except SuppressionError as exc:
        return 400, {"error": str(exc)}
    if not deleted:
        return 404, {"error": f"{recipient} is not on the suppression list"}
    return 200, {"deleted": deleted}
