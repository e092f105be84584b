"""Logging set-up, done once by the command line (library modules only get loggers)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(
    stream: TextIO | None = None, level: int = logging.INFO, json: bool | None = None
) -> None:
    """JSON lines for journald and programs; readable console output on a terminal."""
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (message and newline together): the milter's worker processes
        # share one stdout, and print()'s two writes let their lines run into each other.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
