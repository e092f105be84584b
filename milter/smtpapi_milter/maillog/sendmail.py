"""Sendmail's log, read for what happened to each recipient.

A delivery attempt is one line per mailer and relay, naming one or more recipients::

    QUEUEID: to=<a@b>,<c@d>, ctladdr=<s@x> (33/33), delay=00:00:05, xdelay=00:00:01,
      mailer=esmtp, pri=120345, relay=mx.example.com. [192.0.2.1], dsn=4.2.2,
      stat=Deferred: 452 4.2.2 <a@b>... Mailbox full

Sendmail 8.17 adds the remote server's reply (``reply=452 4.2.2 ..., stat=Deferred: ...``)
between ``dsn=`` and ``stat=``. ``dsn=2.x.x`` (``stat=Sent (reply)``) is a delivery,
``4.x.x`` (``stat=Deferred: reply``, ``stat=Operating system error``) a delay, ``5.x.x``
(``stat=User unknown``, ``stat=Service unavailable``) a bounce.

``QUEUEID: NEWID: DSN: text`` is a notice to the sender, a new message whose deliveries are
not outcomes; ``DSN: Cannot send message for 5 days`` is also the original message given
up on. ``STARTTLS=client, relay=HOST., version=...`` from the same process before its
delivery line is how ``outbound_tls`` is known.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from .lines import LogLine
from .outcome import BOUNCED, DEFERRED, DELIVERED, MessageExpired, Outcome
from .postfix import remember

KINDS = {"2": DELIVERED, "4": DEFERRED, "5": BOUNCED}
METHODS = {"esmtp": "esmtp", "smtp": "esmtp", "relay": "esmtp"}

_DELIVERY = re.compile(
    r"(?P<qid>\w+): to=(?P<to>.*?), (?:ctladdr=.*?, )?delay=(?P<delay>[\d+:]+), "
    r"(?:xdelay=[\d+:]+, )?mailer=(?P<mailer>[^,]+), (?:pri=\d+, )?"
    r"(?:relay=(?P<relay>[^,]*), )?(?:dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), ?)?"
    r"(?:reply=(?P<reply>.*?), )?stat=(?P<stat>.*)$"
)
_ENHANCED = re.compile(r"[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_RELAY = re.compile(r"(?P<host>\S*?)\.? \[(?P<ip>[^\]]*)\]")
_NOTICE = re.compile(
    r"(?P<qid>\w+): (?P<new>\w+): (?:DSN|return to sender|postmaster notify): (?P<text>.*)$"
)
_TLS = re.compile(r"STARTTLS=client, relay=(?P<host>[^,]+?)\.?, version=")
_CODE = re.compile(r"([245]\d\d)[ -]")


class SendmailParser:
    """Feed it every line in order; it keeps what spans lines (TLS sessions, notices)."""

    # A line without any of these tells the parser nothing (see PostfixParser.MARKERS).
    MARKERS = (b": to=", b"STARTTLS=client", b": DSN: ", b"return to sender: ", b"notify: ")

    def __init__(self) -> None:
        self._tls_by_process: OrderedDict[str, str] = OrderedDict()
        self._notices: OrderedDict[str, None] = OrderedDict()
        self._pending: list[Outcome] = []

    def feed_all(self, line: LogLine) -> list[Outcome | MessageExpired]:
        """What ``line`` tells: one outcome per recipient it names, or an expiry."""
        text = line.text
        if ": to=" in text and "stat=" in text:
            return list(self._delivery(line))
        if text.startswith("STARTTLS=client"):
            match = _TLS.match(text)
            if match is not None:
                remember(self._tls_by_process, line.pid, match["host"].lower())
        elif ": DSN: " in text or "return to sender: " in text or "postmaster notify: " in text:
            match = _NOTICE.match(text)
            if match is not None:
                remember(self._notices, match["new"], None)
                if match["text"].startswith("Cannot send message for"):
                    return [MessageExpired(line.time, match["qid"], "")]
        return []

    def _delivery(self, line: LogLine) -> list[Outcome]:
        match = _DELIVERY.match(line.text)
        if match is None or match["qid"] in self._notices:
            return []
        stat = match["stat"]
        dsn = match["dsn"] or ""
        kind = KINDS.get(dsn[:1]) or (DELIVERED if stat.startswith("Sent") else None)
        if kind is None:
            kind = DEFERRED if stat.startswith("Deferred") else BOUNCED
        # Sendmail 8.17 logs the remote's own reply too; its dsn= is Sendmail's reading of
        # it (4.3.1 for a "452 4.2.2 Mailbox full"), so the reply's code is the better one.
        reply = match["reply"] or _reply(stat)
        code = _CODE.match(reply)
        remote = _ENHANCED.match(reply)
        if remote is not None:
            dsn = remote[1]
        host, ip, tls = "", "", None
        where = _RELAY.match(match["relay"] or "")
        if where is not None:
            host, ip = where["host"], where["ip"]
            tls = self._tls_by_process.get(line.pid) == host.lower().rstrip(".")
        mailer = match["mailer"]
        return [
            Outcome(
                kind=kind,
                time=line.time,
                queue_id=match["qid"],
                recipient=address,
                original="",
                reply=reply,
                code=code[1] if code is not None else "",
                enhanced=dsn,
                queue_seconds=_seconds(match["delay"]),
                relay_host=host,
                relay_ip=ip,
                delv_method=METHODS.get(mailer, mailer),
                tls=tls,
                key=f"{line.text}\0{address}",
            )
            for address in _addresses(match["to"])
        ]


def _reply(stat: str) -> str:
    """The reply in ``stat=``: ``Sent (reply)``, ``Deferred: reply``, or the text itself."""
    if stat.startswith("Sent (") and stat.endswith(")"):
        return stat[6:-1]
    if stat.startswith("Deferred: "):
        return stat[10:]
    return stat


def _addresses(field: str) -> list[str]:
    return [a.strip().strip("<>") for a in field.split(",") if a.strip().strip("<>")]


def _seconds(delay: str) -> float:
    """``HH:MM:SS`` or ``D+HH:MM:SS``."""
    days, _, clock = delay.rpartition("+")
    parts = [int(p) for p in clock.split(":") if p.isdigit()]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds + (int(days) * 86400 if days.isdigit() else 0)
