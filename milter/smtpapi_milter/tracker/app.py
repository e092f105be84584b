"""The public tracker: ``/c/`` click redirects, ``/o/`` and ``/i/`` pixels (SPEC 6), and
``/u/`` one-click unsubscribe (SPEC 14, in unsubscribe.py).

A raw ASGI application: three routes do not need a framework, and every microsecond spent
per request is a click the tracker cannot serve. What a tracking request gets is decided once
(:meth:`TrackerApp.track`) and written by the interface that carried it: ASGI here, Granian's
RSGI for the hot routes of the live listener (rsgi.py). The rules that matter:

- The event is durable before the response goes out (the recorder's group commit). If it
  cannot be stored the answer is 503 and no redirect: a redirect without its event is an
  engagement the sender never learns of.
- Only tokens we issued lead anywhere. Tampered, truncated or unknown-key tokens get a 404
  page, never a redirect, so the tracker can never be used as an open redirect. So does a
  target whose host a browser would read differently (:mod:`..unambiguous_url`).
- HEAD answers like GET but records nothing (link checkers and proxies use it).
- An expired link still takes the reader to the target (the mail is theirs) but records
  nothing.
- A repeat the flood guard folds (flood.py) is answered at once, counted but not stored.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import structlog

from ..events.model import tracking_events
from ..ids import unique_event_id
from ..tokens import InvalidToken, TokenCodec, TrackingData
from ..unambiguous_url import is_unambiguous
from . import metrics, unsubscribe
from .asgi import HTML, NO_STORE, NOT_FOUND_PAGE, Receive, Scope, Send, header, respond
from .flood import FloodGuard
from .recorder import EventRecorder
from .unsubscribe import Unsubscriber, UnsubscribeRoute
from .useragent import user_agent_parsed

log = structlog.get_logger("smtpapi_milter.tracker")

# A 1x1 GIF whose one pixel is transparent (43 bytes, the size every tracker serves).
PIXEL = bytes.fromhex(
    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
)
PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL)).encode()),
    NO_STORE,
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
UNAVAILABLE_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Try again</title></head>"
    b"<body><h1>Temporarily unavailable</h1><p>Please try the link again in a moment."
    b"</p></body></html>\n"
)
# Characters a browser would percent-encode in a URL it follows; everything else (and every
# existing %XX escape) stays as the sender wrote it.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>\\^`{|}')
# What quote() escapes with that safe set: a target without any of these is its own Location.
_URL_UNSAFE = re.compile(f"[^{re.escape(_URL_SAFE)}]")
TRACKING_PATHS = {"/c/": "click", "/o/": "open", "/i/": "initial_open"}
# Targets whose redirect is decided (see redirect_location): emptied when this many are held,
# and none longer than MAX_TARGET_CHARS, so that they take at most ~13 MB (a percent-encoded
# CJK target is 9 bytes a character), ~200 KB for links of a usual length.
MAX_TARGETS = 1024
MAX_TARGET_CHARS = 1024
_redirects: dict[str, str | None] = {}


def location(url: str) -> bytes:
    """``url`` as a Location header value: ASCII, non-ASCII and spaces percent-encoded."""
    return location_text(url).encode("ascii")


def location_text(url: str) -> str:
    """:func:`location` as text (RSGI takes header values as ``str``); only ASCII in it."""
    # Most targets have nothing to escape: quote() took 0.57 us a click to give them back
    # unchanged, this search 0.1 us.
    if _URL_UNSAFE.search(url) is None:
        return url
    return quote(url, safe=_URL_SAFE, encoding="utf-8", errors="surrogatepass")


def redirect_location(url: str) -> str | None:
    """The Location text of a redirect to click target ``url``, None if it must not be
    followed (:func:`~..unambiguous_url.is_unambiguous`).

    Kept per target: a campaign's clicks repeat its few links over as many tokens as it has
    recipients, and deciding again cost 1.3 us a click (the check 0.72, the text 0.57),
    the lookup 0.05 us. Bounded: emptied when ``MAX_TARGETS`` are held; a target longer than
    ``MAX_TARGET_CHARS`` is decided each time.
    """
    try:
        return _redirects[url]
    except KeyError:
        pass
    decided = location_text(url) if is_unambiguous(url) else None
    if len(url) > MAX_TARGET_CHARS:
        return decided
    if len(_redirects) >= MAX_TARGETS:
        _redirects.clear()  # not the oldest one by one: a plain dict's next(iter()) then slows
    _redirects[url] = decided
    return decided


class Answer(enum.Enum):
    """What :meth:`TrackerApp.track` answers, other than a redirect (its Location text)."""

    NOT_FOUND = "the 404 page"
    UNAVAILABLE = "503, try again"
    PIXEL = "the pixel"


class RequestReader(Protocol):
    """What the decision reads of a request, from whichever interface's request object."""

    def address(self, request: Any) -> str: ...

    def user_agent(self, request: Any) -> str: ...


class ClientAddress:
    """The client's address, believing X-Forwarded-For only from configured proxies."""

    def __init__(self, trusted_proxies: list[str]):
        self._networks = [ipaddress.ip_network(net, strict=False) for net in trusted_proxies]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def __call__(self, scope: Scope) -> str:
        peer = scope["client"][0] if scope.get("client") else ""
        return self.resolve(peer, header, scope)

    def resolve(self, peer: str, read: Callable[[Any, bytes], bytes], request: Any) -> str:
        """The client of a request from ``peer``; ``read(request, b"x-forwarded-for")`` gives
        the header's first value (asked only when ``peer`` is a trusted proxy)."""
        if not self._networks or not self._trusted(peer):
            return peer
        forwarded = read(request, b"x-forwarded-for").decode("latin-1")
        # Right to left: the last hop not ours is the client (earlier ones can be forged).
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            try:
                ip = ipaddress.ip_address(hop)
            except ValueError:
                # Not an address (a name, "unknown", a port, text made up by the client):
                # nothing to the left of it can be believed, so the reader is the one
                # who connected. Stored events and the flood guard only see addresses.
                return peer
            if not any(ip in net for net in self._networks):
                return str(ip)
        return peer


def _token(scope: Scope) -> str:
    """The token after /c/, /o/, /i/ or /u/. The raw path keeps a percent-encoded token as
    the client sent it; decode tolerates both forms."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return raw[3:].decode("latin-1")


class AsgiRequests:
    """:class:`RequestReader` of ASGI scopes."""

    def __init__(self, client_address: ClientAddress):
        self.address = client_address

    @staticmethod
    def user_agent(scope: Scope) -> str:
        return header(scope, b"user-agent").decode("utf-8", "replace")


class TrackerApp:
    """The ASGI callable for ``[engagement_tracker] listen``."""

    def __init__(
        self,
        codec: TokenCodec,
        recorder: EventRecorder,
        client_address: ClientAddress,
        health: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        guard: FloodGuard | None = None,
    ):
        self.codec = codec
        self.recorder = recorder
        self.client_address = client_address
        self.health = health
        self.clock = clock
        self.guard = guard or FloodGuard(window=0, hourly_limit=0)
        self.unsubscriber = Unsubscriber(recorder.store)
        self.unsubscribe = UnsubscribeRoute(codec, self.unsubscriber, client_address, clock)
        self._requests = AsgiRequests(client_address)
        # The one event loop every request runs on, when the server says so (RSGI's
        # __rsgi_init__): the recorder then need not ask asyncio for it (recorder.py).
        self.loop: asyncio.AbstractEventLoop | None = None
        metrics.prepare()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is handled by the server wrapper (see server.py)
        path = scope["path"]
        kind = TRACKING_PATHS.get(path[:3])
        method = scope["method"]
        if path.startswith(unsubscribe.PATH):  # one-click unsubscribe takes POST too
            await self.unsubscribe(scope, receive, send, _token(scope))
        elif method not in ("GET", "HEAD"):
            await respond(send, 405, [(b"allow", b"GET, HEAD")], b"", method)
        elif kind is not None:
            answer = await self.track(kind, _token(scope), method, scope, self._requests)
            await _respond(send, answer, method)
        elif path == "/healthz":
            ok = self.health()
            body = b"ok\n" if ok else b"event store unavailable\n"
            await respond(send, 200 if ok else 503, [NO_STORE], body, method)
        else:
            await _not_found(send, method)

    async def track(
        self, kind: str, token: str, method: str, request: Any, reader: RequestReader
    ) -> Answer | str:
        """The answer to a GET or HEAD of /c/, /o/ or /i/ ``token``: the event recorded (or
        folded, or not for HEAD and expired links) before it returns. A redirect is returned
        as its Location text. ``reader`` reads the client's address and user agent off
        ``request``, only when an event is stored."""
        started = time.perf_counter()
        try:
            data = self.codec.decode(token)
        except InvalidToken:
            data = None
        # A token only works on its own path, and only click tokens carry a target. A target
        # whose host a browser reads otherwise than we do (a token minted before the milter
        # refused such links) is not followed: the 404 page, as for a bad token.
        if data is None or data.kind != kind:
            location = None
        elif kind == "click":
            location = redirect_location(data.target_url) if data.target_url else None
        else:  # a pixel: valid ("" here) only without a target
            location = None if data.target_url else ""
        if location is None:
            metrics.request(kind, "invalid")
            return Answer.NOT_FOUND
        now = self.clock()
        outcome = "head" if method == "HEAD" else "expired" if data.is_expired(now) else "stored"
        address = reader.address(request) if outcome == "stored" else ""
        if outcome == "stored" and (folded := self.guard.check(data, address, now)):
            self.recorder.fold(folded)
            outcome = "folded"
        if outcome == "stored":
            events = self._events(reader.user_agent(request), kind, data, now, address)
            try:
                if kind == "click" and data.unsubscribe:  # suppressed in the same commit
                    await self.unsubscriber.store(events, data.rcpt_to, unsubscribe.LINK_SOURCE)
                else:
                    await self.recorder.record(events, self.loop)
            except Exception:
                self.guard.release(data, address)
                metrics.request(kind, "unavailable")
                return Answer.UNAVAILABLE
        metrics.request(kind, outcome, time.perf_counter() - started)
        return location if kind == "click" else Answer.PIXEL

    def _events(
        self, agent: str, kind: str, data: TrackingData, now: float, address: str
    ) -> list[dict[str, Any]]:
        """The request's events: a click on an unsubscribe link is also a link_unsubscribe."""
        parsed = user_agent_parsed(agent, kind, data.injection_time, now)
        return tracking_events(kind, unique_event_id, now, data, address, agent, parsed)


async def _not_found(send: Send, method: str) -> None:
    await respond(send, 404, [HTML, NO_STORE], NOT_FOUND_PAGE, method)


# The responses of :meth:`TrackerApp.track`'s answers, as ASGI sends them. rsgi.py holds the
# same (RSGI takes text); a test holds the two byte for byte equal on the wire.
UNAVAILABLE_HEADERS = [HTML, NO_STORE, (b"retry-after", b"5")]
REDIRECT_HEADERS = [NO_STORE, (b"referrer-policy", b"no-referrer"), (b"content-length", b"0")]


async def _respond(send: Send, answer: Answer | str, method: str) -> None:
    if answer is Answer.PIXEL:
        await respond(send, 200, PIXEL_HEADERS, PIXEL, method, length_set=True)
    elif answer is Answer.NOT_FOUND:
        await _not_found(send, method)
    elif answer is Answer.UNAVAILABLE:
        await respond(send, 503, UNAVAILABLE_HEADERS, UNAVAILABLE_PAGE, method)
    else:  # a redirect
        headers = [(b"location", answer.encode("ascii")), *REDIRECT_HEADERS]
        await respond(send, 302, headers, b"", method)
