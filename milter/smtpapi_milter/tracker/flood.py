"""The flood guard: a replayed tracked link is answered every time, but stored within bounds.

One tracked link replayed with a load generator used to store every request as an event of
its recipient (29,140 clicks in 5 s, ~10 MB/s of store growth, every one sent to webhooks).
The reader must still get every redirect and pixel, so the guard decides only what is
*stored*. Within one tracker worker process, a request for a token is stored as an event
only if

- no event of that token was stored for the same client (its address, an IPv6 client by
  its /64) within the last ``flood_window`` seconds, and
- fewer than ``flood_token_hourly_limit`` events of that token were stored in the current
  clock hour;

otherwise it is *folded*: answered the same way, counted in the store's ``token_floods``
table instead of stored as a row (and not sent to webhooks). A token is flagged as abused
there once a request is folded after more than ``flood_token_hourly_limit`` requests for it
reached the worker in the clock hour.

Why per worker, in memory: the decision costs a few dictionary operations and no store
round trip, so the normal click path pays nothing measurable and a folded request no commit
at all. The price is that the bounds multiply: with W workers on each of N tracker nodes, a
(token, client) pair gets at most W x N events per window, a token at most W x N x limit
events per hour. The counters are exact (every folded request is counted once), and are
written with the recorder's next group commit or within a second (recorder.py).

Memory is bounded too: past ``MAX_RECENT`` (token, client) pairs or ``MAX_TOKENS`` tokens
the oldest are forgotten (about 26 MB per worker at both caps, measured), which can only let
a repeat be stored again, never lose a redirect. A check costs ~2-3 us of CPU, at the caps too.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict

from ..events.floods import FloodCount
from ..tokens import TrackingData

SECONDS_PER_HOUR = 3600
MAX_RECENT = 50_000
MAX_TOKENS = 50_000


def token_identity(data: TrackingData) -> tuple[str, ...]:
    """What makes two tokens the same link of the same recipient (however it was encoded):
    two links to one URL under different names are two links."""
    return (
        data.kind,
        data.transmission_id,
        data.message_id,
        data.rcpt_to,
        data.target_url,
        data.link_name,
    )


def token_key(data: TrackingData) -> str:
    """The token's stable name in the store: a digest, so the table holds no address."""
    return hashlib.sha256("\x1f".join(token_identity(data)).encode()).hexdigest()[:32]


def client_key(address: str) -> str:
    """The client as the guard counts it: an IPv6 client by its /64 (one subscriber's
    allocation, which it can fill with as many addresses as it likes)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    except ValueError:
        return address


class FloodGuard:
    """Decides, per request, whether its event is stored or folded into a counter.

    Used from one event loop (one worker process): no locks.
    """

    def __init__(self, window: float, hourly_limit: int):
        self.window = window
        self.hourly_limit = hourly_limit
        # Python's hash of the token's identity (randomized per process, so a client cannot
        # aim for collisions; a collision would only fold a request, never lose a redirect).
        self._recent: OrderedDict[int, float] = OrderedDict()  # (token, client) -> stored at
        self._hour = -1
        # token -> [requests, stored] this hour. Ordered dicts both: dropping the oldest entry
        # of a plain dict again and again makes each next(iter()) scan the deleted slots.
        self._tokens: OrderedDict[int, list[int]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.window > 0 or self.hourly_limit > 0

    def check(self, data: TrackingData, client: str, now: float) -> FloodCount | None:
        """None: store this request's event (counted as stored). Otherwise the count of one
        folded request, for the recorder to add to the store's counters."""
        # Every click goes through here: the forgetting and the hour's counts are written
        # out in it rather than called (1.37 -> 1.13 us a check, timeit).
        window = self.window
        limit = self.hourly_limit
        if window <= 0 and limit <= 0:
            return None
        token = hash(token_identity(data))  # one definition of "the same link"
        pair = hash((token, client_key(client) if ":" in client else client))
        recent = self._recent
        if window > 0:
            # Entries are appended in time order, so the expired ones are at the front.
            cutoff = now - window
            while recent:
                oldest, stored_at = next(iter(recent.items()))
                if stored_at > cutoff:
                    break
                del recent[oldest]
        hour = int(now // SECONDS_PER_HOUR)
        tokens = self._tokens
        if hour != self._hour:  # a new clock hour: every token starts again
            self._hour = hour
            tokens.clear()
        counts = tokens.get(token)
        if counts is None:
            if len(tokens) >= MAX_TOKENS:
                tokens.popitem(last=False)
            counts = tokens[token] = [0, 0]
        counts[0] += 1
        if pair in recent or (limit > 0 and counts[1] >= limit):
            abused = limit > 0 and counts[0] > limit
            return FloodCount.of_request(token_key(data), data, now, abused)
        counts[1] += 1
        if window > 0:
            recent[pair] = now
            if len(recent) > MAX_RECENT:
                recent.popitem(last=False)
        return None

    def release(self, data: TrackingData, client: str) -> None:
        """Undo a ``check`` that said store, when storing failed: the retry must be stored."""
        token = hash(token_identity(data))
        self._recent.pop(hash((token, client_key(client))), None)
        counts = self._tokens.get(token)
        if counts is not None and counts[1] > 0:
            counts[1] -= 1
