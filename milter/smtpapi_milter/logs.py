"""Logging set-up, done once by the command line (library modules only get loggers).

The milter writes one JSON line per message, so a line's cost is on the hot path, and it is
paid with cold caches (the MTA's processes run between the milter's callbacks). Measured in
one process on bench/milter_cpu.py's merge load, the milter's per-message line with its
counters (``SmtpapiMilter._log_result``), 8 rounds alternating: 64 -> 47 us of CPU (medians),
and 109 -> 88 us with 16 MiB touched between messages. structlog's stock JSON renderer, ISO
time stamper and context-variable merge (nothing binds context variables) were most of it;
here the renderer is orjson (a dependency already, events/payload.py) with the standard
library as its fallback, and the time stamp is made from a per-second prefix. The lines carry
the same keys and values as before.
"""

from __future__ import annotations

import json as std_json
import logging
import sys
import time
from typing import Any, TextIO

import orjson
import structlog

EventDict = dict[str, Any]


def configure(
    stream: TextIO | None = None, level: int = logging.INFO, json: bool | None = None
) -> None:
    """JSON lines for journald and programs; readable console output on a terminal."""
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = render_json if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (message and newline together): the milter's worker processes
        # share one stdout, and print()'s two writes let their lines run into each other.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def render_json(_logger: Any, _name: str, event: EventDict) -> str:
    """The event as one line of JSON. Values JSON has no type for are written as their
    ``repr`` (as structlog's renderer does). orjson refuses what the standard library takes
    (an integer beyond 64 bits, a key that is not a string): such a line is made by the
    standard library instead, never dropped."""
    try:
        return orjson.dumps(event, default=repr).decode()
    except TypeError:
        return std_json.dumps(event, default=repr)


# (second, its ISO 8601 text in UTC): one reference, swapped whole, so that threads
# never see a second with another second's text.
_second: tuple[int, str] = (-1, "")


def add_timestamp(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """``timestamp``: UTC, ISO 8601 with microseconds and ``Z``, as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it."""
    global _second
    now = time.time()
    second = int(now)
    micros = int((now - second) * 1_000_000)
    known, text = _second
    if second != known:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    event["timestamp"] = f"{text}.{micros:06d}Z"
    return event
