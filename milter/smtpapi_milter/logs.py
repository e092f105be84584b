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


class HotLogger:
    """A module's logger for a line written per message (the milter's ``message``), bound
    once for each logging configuration.

    structlog's module loggers are lazy proxies that assemble a bound logger for every line
    (``cache_logger_on_first_use`` is off: the tests reconfigure logging and capture it after
    modules have logged, and a proxy that kept its first logger would keep writing where
    logging went then). Assembling is a context, a logger from the factory and the wrapper:
    the milter's ``_log_result`` on bench/milter_cpu.py's merge load, 8 rounds alternating,
    took 51 -> 46 us of CPU (medians) with a logger bound once, 88 -> 76 us with 16 MiB
    touched between messages. This keeps the logger it bound while structlog's
    configuration holds the same processors, wrapper class, logger factory and context
    class (the objects themselves), and binds again when any of them changes."""

    __slots__ = ("_made", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        # (the configuration's objects it was bound from, the logger): one reference, swapped
        # whole, so that no thread sees a logger with another configuration's objects.
        self._made: tuple[tuple[Any, ...], Any] = ((), None)

    def get(self) -> Any:
        """The bound logger for the current configuration."""
        config = structlog.get_config()
        source = (
            config["processors"],
            config["wrapper_class"],
            config["logger_factory"],
            config["context_class"],
        )
        made_from, bound = self._made
        if bound is None or any(a is not b for a, b in zip(source, made_from, strict=True)):
            bound = structlog.get_logger(self._name).bind()
            self._made = (source, bound)
        return bound
