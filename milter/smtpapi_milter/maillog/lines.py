"""One log line, whichever source it came from: when, which program, which process, what.

Files hold syslog lines (``Dec 04 15:39:09 host postfix/smtp[10655]: text``, or with an RFC
3339 time stamp as rsyslog's high-precision format writes); journald gives the same parts as
fields. Parsers only ever see :class:`LogLine`.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import datetime
from typing import Any, NamedTuple

from .._native import load

# The C walk of _CLASSIC (_native/maillogline.c) gives the same parts as the expression,
# which stays the reference it is tested against; SMTPAPI_PURE_PYTHON=1 forces the reference.
_native: Any = load("maillogline")

MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}

_CLASSIC = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) "
    r"\S+ (?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<text>.*)"
)
_RFC3339 = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) "
    r"\S+ (?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<text>.*)"
)


class LogLine(NamedTuple):  # a named tuple: one is made per line kept (see outcome.py)
    """``tag`` is the syslog identifier (``postfix/smtp``, ``sm-mta``), ``time`` unix seconds."""

    time: float
    tag: str
    pid: str
    text: str


def parse_syslog(raw: str, now: float | None = None) -> LogLine | None:
    """The parts of one syslog line, or None for a line of another shape.

    The classic time stamp has no year: it is this year's, or last year's when that would
    put it more than a day in the future (a December line read in January).
    """
    match = _CLASSIC.match(raw)
    if match is not None:
        tag, pid, text = match.group("tag", "pid", "text")
        return LogLine(_classic_time(match, now), tag, pid or "", text)
    match = _RFC3339.match(raw)
    if match is None:
        return None
    try:
        stamp = datetime.fromisoformat(match["stamp"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return LogLine(stamp, match["tag"], match["pid"] or "", match["text"])


def parse_syslog_bytes(raw: bytes, now: float) -> LogLine | None:
    """``parse_syslog(raw.decode("utf-8", "replace"), now)``, the common case in C: an ASCII
    classic line whose stamp was seen before (the regular expression, the decoding and the
    five strings of the stamp's fields were the follower's largest cost per line kept)."""
    if _native is not None:
        parts = _native.classic(raw)
        if parts is not None:
            written, tag, pid, text = parts
            stamp = _STAMPS.get((_year(now), written))
            # Not seen, or a stamp of last year: the reference works it out (and keeps it).
            if stamp is not None and stamp <= now + 86400:
                return LogLine(stamp, tag, pid, text)
    return parse_syslog(raw.decode("utf-8", "replace"), now)


def _classic_time(match: re.Match[str], now: float | None) -> float:
    now = time.time() if now is None else now
    year = _year(now)
    # The stamp as written is the key: one string to hash (the match starts the line), not
    # the five new ones its fields would be.
    written = match.string[: match.end("s")]
    stamp = _STAMPS.get((year, written))
    if stamp is None:
        stamp = _local(year, *match.group("mon", "day", "h", "m", "s"))
        if len(_STAMPS) >= STAMPS_KEPT:
            _STAMPS.clear()  # a new stamp each second: what is common refills it
        _STAMPS[year, written] = stamp
    if stamp > now + 86400:
        stamp = _local(year - 1, *match.group("mon", "day", "h", "m", "s"))
    return stamp


STAMPS_KEPT = 4096
_STAMPS: dict[tuple[int, str], float] = {}  # (year, stamp as written) -> unix time


@functools.lru_cache(maxsize=1)  # the follower passes one ``now`` for a whole batch
def _year(now: float) -> int:
    return time.localtime(now).tm_year


@functools.lru_cache(maxsize=4096)  # a busy log repeats each second's stamp many times
def _local(year: int, mon: str, day: str, hour: str, minute: str, second: str) -> float:
    return _mktime(year, MONTHS.get(mon, 1), int(day), int(hour), int(minute), int(second))


def _mktime(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    # Syslog writes local time; mktime reads it as such (the machine's zone, as syslog's).
    try:
        return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return 0.0
