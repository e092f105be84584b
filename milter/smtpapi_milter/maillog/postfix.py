"""Postfix's log, read for what happened to each recipient.

Delivery agents (smtp, lmtp, local, virtual, pipe, error, retry) log one line per recipient
and attempt::

    QUEUEID: to=<a@b>, orig_to=<c@d>, relay=mx.example[192.0.2.1]:25, conn_use=2, delay=1.2,
      delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx.example[192.0.2.1] said:
      550 5.1.1 <a@b>: User unknown (in reply to RCPT TO command))

``status=sent`` is a delivery, ``deferred`` a delay, ``bounced`` and ``expired`` a bounce.
The queue manager gives a whole message up with ``QUEUEID: from=<s>, status=expired,
returned to sender``. The bounce daemon's ``QUEUEID: sender non-delivery notification:
NEWID`` names a new message, the notice to the sender: its deliveries are not outcomes of
anything the sender injected, so they are skipped. ``Trusted/Verified/Anonymous TLS
connection established to HOST[IP]:PORT`` comes from the same smtp process just before its
deliveries over that connection: that is how ``outbound_tls`` is known.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from typing import Any

from .._native import load
from .lines import LogLine
from .outcome import BOUNCED, DEFERRED, DELIVERED, MessageExpired, Outcome

STATUS_KINDS = {"sent": DELIVERED, "deferred": DEFERRED, "bounced": BOUNCED, "expired": BOUNCED}
# Agents whose tag names the method SparkPost calls it by; others keep their own name.
METHODS = {"smtp": "esmtp", "lmtp": "lmtp"}
REMEMBERED = 10_000  # queue ids and processes remembered (notices, TLS), oldest forgotten

_DELIVERY = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig>[^>]*)>, )?"
    r"relay=(?P<relay>[^,]*), (?:conn_use=(?P<reuse>\d+), )?delay=(?P<delay>[\d.]+), "
    r"(?:delays=[^,]*, )?dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>[a-z]+)"
    r"(?: \((?P<reason>.*)\))?"
)
_EXPIRED = re.compile(r"(?P<qid>[0-9A-Za-z]+): from=<(?P<sender>[^>]*)>, status=expired")
_NOTICE = re.compile(r"[0-9A-Za-z]+: (?:sender|postmaster) [a-z -]*notification: (?P<new>\w+)$")
_TLS = re.compile(r"(?:Trusted|Verified|Anonymous|Untrusted) TLS connection established to (\S+): ")
_RELAY = re.compile(r"(?P<host>[^\[]*)\[(?P<ip>[^\]]*)\]")
_SAID = re.compile(r"host \S+ said: (?P<reply>.*?)(?: \(in reply to [^)]*\))?$")
_CODE = re.compile(r"([245]\d\d)[ -]")

# The C walk of _DELIVERY (_native/maillogline.c) gives the same groups as the expression,
# which stays the reference it is tested against; SMTPAPI_PURE_PYTHON=1 forces the reference.
_native: Any = load("maillogline")


def delivery_groups(text: str) -> tuple | None:
    """``_DELIVERY.match(text).groups()``, or None when it does not match."""
    if _native is not None:
        groups = _native.delivery(text)
        if groups is not NotImplemented:  # text the C walk leaves to the expression
            return groups
    match = _DELIVERY.match(text)
    return None if match is None else match.groups()


class PostfixParser:
    """Feed it every line in order; it keeps what spans lines (TLS sessions, notices)."""

    # A line without any of these tells the parser nothing: the follower skips it unread
    # (most lines of a busy log: smtpd, cleanup, qmgr's queue lines).
    MARKERS = (b": to=<", b"TLS connection established to ", b"notification: ", b"status=expired")

    def __init__(self) -> None:
        self._tls_by_process: OrderedDict[str, str] = OrderedDict()
        self._tls_by_relay: OrderedDict[str, bool] = OrderedDict()
        self._notices: OrderedDict[str, None] = OrderedDict()

    def feed_all(self, line: LogLine) -> list[Outcome | MessageExpired]:
        """What ``line`` tells, as a list (the follower's interface to every parser)."""
        found = self.feed(line)
        return [] if found is None else [found]

    def feed(self, line: LogLine) -> Outcome | MessageExpired | None:
        text = line.text
        if ": to=<" in text:
            return self._delivery(line)
        if "TLS connection established to " in text:
            self._tls(line)
        elif "notification: " in text:
            match = _NOTICE.match(text)
            if match is not None:
                remember(self._notices, match["new"], None)
        elif "status=expired" in text:
            match = _EXPIRED.match(text)
            if match is not None:
                return MessageExpired(line.time, match["qid"], match["sender"])
        return None

    def _tls(self, line: LogLine) -> None:
        match = _TLS.search(line.text)
        if match is not None:
            remember(self._tls_by_process, line.pid, match[1])
            remember(self._tls_by_relay, match[1], True)

    def _delivery(self, line: LogLine) -> Outcome | None:
        groups = delivery_groups(line.text)
        if groups is None:
            return None
        qid, to, orig, relay, reuse, delay, dsn, status, reason = groups
        if qid in self._notices:
            return None
        kind = STATUS_KINDS.get(status)
        if kind is None:  # deliverable/undeliverable: address verification probes
            return None
        host, ip, tls = relay, "", None
        where = _relay_parts(relay)
        if where is not None:
            host, ip = where
            tls = self._tls_by_process.get(line.pid) == relay
            if reuse:  # a cached connection, opened (and logged) by another process
                tls = tls or self._tls_by_relay.get(relay, False)
            else:
                remember(self._tls_by_relay, relay, tls)
        reason = reason or ""
        said = _SAID.match(reason)
        reply = said["reply"] if said is not None else reason
        code = _CODE.match(reply)
        agent = line.tag.rpartition("/")[2]
        return Outcome(  # by position, in Outcome's order: keywords cost more, once per line
            kind,  # kind
            line.time,  # time
            qid,  # queue_id
            to,  # recipient
            orig or "",  # original
            reply,  # reply
            code[1] if code is not None else "",  # code
            dsn,  # enhanced
            float(delay),  # queue_seconds
            host,  # relay_host
            ip,  # relay_ip
            METHODS.get(agent, agent),  # delv_method
            tls,  # tls
            line.text,  # key
        )


@functools.lru_cache(maxsize=REMEMBERED)  # a few relays serve most lines
def _relay_parts(relay: str) -> tuple[str, str] | None:
    """(host, ip) of a ``relay=`` value like ``mx.example[192.0.2.1]:25``; None for one
    without brackets (``none``, ``local``)."""
    where = _RELAY.match(relay)
    return None if where is None else (where["host"], where["ip"])


def remember(table: OrderedDict, key: str, value: object) -> None:
    """Keep ``key`` in a bounded table (the oldest entry goes when it is full)."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > REMEMBERED:
        table.popitem(last=False)
