"""The tracker's ``/u/TOKEN`` route: RFC 8058 one-click unsubscribe (SPEC 14).

- ``POST`` (a mailbox provider sends ``List-Unsubscribe=One-Click`` form-encoded; a reader's
  browser submits the confirmation form) records a ``list_unsubscribe`` event and suppresses
  the recipient, both in one transaction that is committed before the 2xx goes out. Whatever
  the body says it counts (RFC 8058 names one body, but a provider that sends another still
  means it); at most ``MAX_BODY`` bytes of it are read. The flood guard is not asked: an
  unsubscribe is never folded into a counter.
- ``GET`` and ``HEAD`` answer a small confirmation page whose button POSTs to the same URL,
  and change nothing: link scanners and previewers fetch every URL in a message.
- A token that is not ours (tampered, truncated, unknown key), not an unsubscribe token, or
  names no recipient: 404, nothing recorded.
- An expired token is honoured all the same. The link's expiry limits how long engagement
  is recorded; an unsubscribe is the reader's opt-out, which CAN-SPAM requires to keep
  working for 30 days at least, RFC 8058 and the mailbox providers expect to work whenever
  it is used, and refusing it only keeps mail going to someone who asked it to stop. (What
  a forged request could do with a genuine old token it could do before expiry too: stop
  that one recipient's mail.)

The store write is one synchronous transaction of its own in a worker thread, not the
recorder's group commit (recorder.py): the route is rare, and the suppression has to be in
the event's transaction. A click on a ``data-msys-unsubscribe="1"`` link takes the same way
(:meth:`Unsubscriber.store`), so its click, link_unsubscribe and suppression commit together.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from typing import Any

import structlog

from ..events.model import engagement_event
from ..events.store import Cursor, EventStore, LazyStore
from ..ids import unique_event_id
from ..suppression.store import SuppressionError, suppress
from ..tokens import InvalidToken, TokenCodec, TrackingData
from . import metrics
from .asgi import HTML, NO_STORE, NOT_FOUND_PAGE, Receive, Scope, Send, header, respond
from .useragent import user_agent_parsed

log = structlog.get_logger("smtpapi_milter.tracker")

PATH = "/u/"
KIND = "list_unsubscribe"
LINK_SOURCE = "link_unsubscribe"
MAX_BODY = 4096  # bytes of a POST body read; "List-Unsubscribe=One-Click" is 26
# The pages load nothing from anywhere and may only submit to this URL.
_CSP = (
    b"content-security-policy",
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
)
_PAGE_HEADERS = [
    HTML,
    NO_STORE,
    _CSP,
    (b"referrer-policy", b"no-referrer"),
    (b"x-robots-tag", b"noindex"),
]
_STYLE = "body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"
_CONFIRM = (
    "<!doctype html><html><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width'><meta name=robots content=noindex>"
    "<title>Unsubscribe</title><style>{style}</style></head><body><h1>Unsubscribe</h1>"
    "<p>Stop sending these emails to <strong>{address}</strong>?</p>"
    "<form method=post><input type=hidden name=List-Unsubscribe value=One-Click>"
    "<button type=submit>Unsubscribe</button></form></body></html>\n"
)
_DONE = (
    "<!doctype html><html><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width'><meta name=robots content=noindex>"
    "<title>Unsubscribed</title><style>{style}</style></head><body><h1>Unsubscribed</h1>"
    "<p><strong>{address}</strong> will not get these emails any more.</p></body></html>\n"
)
UNAVAILABLE_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Try again</title></head>"
    b"<body><h1>Temporarily unavailable</h1><p>Your request was not recorded. Please try "
    b"again in a moment.</p></body></html>\n"
)


class Unsubscriber:
    """Stores an unsubscribe's events and its suppression entry in one transaction.

    ``store`` is the tracker's (possibly lazily opened) event store; StoreUnavailable and
    whatever else the store raises reach the caller, which answers 503.
    """

    def __init__(self, store: EventStore | LazyStore):
        self._store = store

    async def store(self, events: list[dict[str, Any]], recipient: str, source: str) -> None:
        """Return once ``events`` and ``recipient``'s suppression are committed."""
        await asyncio.to_thread(self._write, events, recipient, source)

    def _write(self, events: list[dict[str, Any]], recipient: str, source: str) -> None:
        # The open store itself: suppress() runs SQL on it inside the transaction.
        store = self._store.get() if isinstance(self._store, LazyStore) else self._store

        def work(cur: Cursor) -> None:
            store.insert_events(cur, events)
            if not recipient:  # a shared body's link names nobody: nothing to suppress
                return
            try:
                suppress(store, recipient, source=source, cur=cur)
            except SuppressionError as exc:
                # An envelope recipient the list cannot key (no domain, say): the event
                # still tells the sender; a 503 would only make the provider retry forever.
                log.warning("unsubscribe of an address the list refuses", error=str(exc))

        store.transaction(work, write=True)


class UnsubscribeRoute:
    """``/u/TOKEN`` for :class:`~.app.TrackerApp`, which hands over every request under it."""

    def __init__(
        self,
        codec: TokenCodec,
        unsubscriber: Unsubscriber,
        client_address: Callable[[Scope], str],
        clock: Callable[[], float],
    ):
        self.codec = codec
        self.unsubscriber = unsubscriber
        self.client_address = client_address
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            await respond(send, 405, [(b"allow", b"GET, HEAD, POST")], b"", method)
            return
        data = self._decode(token)
        if data is None:
            metrics.request("unsubscribe", "invalid")
            await respond(send, 404, [HTML, NO_STORE], NOT_FOUND_PAGE, method)
            return
        address = html.escape(data.rcpt_to)
        if method != "POST":
            metrics.request("unsubscribe", "head" if method == "HEAD" else "page")
            page = _CONFIRM.format(style=_STYLE, address=address).encode()
            await respond(send, 200, _PAGE_HEADERS, page, method)
            return
        await _read_some(receive)
        now = self.clock()
        event = _event(scope, data, now, self.client_address(scope))
        try:
            await self.unsubscriber.store([event], data.rcpt_to, KIND)
        except Exception as exc:
            log.warning("unsubscribe not stored", error=str(exc))
            metrics.request("unsubscribe", "unavailable")
            headers = [HTML, NO_STORE, (b"retry-after", b"5")]
            await respond(send, 503, headers, UNAVAILABLE_PAGE, method)
            return
        metrics.request("unsubscribe", "stored")
        log.info("unsubscribed", transmission_id=data.transmission_id, expired=data.is_expired(now))
        page = _DONE.format(style=_STYLE, address=address).encode()
        await respond(send, 200, _PAGE_HEADERS, page, method)

    def _decode(self, token: str) -> TrackingData | None:
        try:
            data = self.codec.decode(token)
        except InvalidToken:
            return None
        if data.kind != "unsubscribe" or not data.rcpt_to:
            return None
        return data


def _event(scope: Scope, data: TrackingData, now: float, address: str) -> dict[str, Any]:
    agent = header(scope, b"user-agent").decode("utf-8", "replace")
    parsed = user_agent_parsed(agent, KIND, data.injection_time, now)
    return engagement_event(
        kind=KIND,
        event_id=unique_event_id(),
        now=now,
        data=data,
        ip_address=address,
        user_agent=agent,
        user_agent_parsed=parsed,
    )


async def _read_some(receive: Receive) -> bytes:
    """Up to MAX_BODY bytes of the request body; the rest is left unread (the server
    discards it), so a huge body costs us nothing."""
    body = b""
    while len(body) < MAX_BODY:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return body[:MAX_BODY]
