"""The ``bounce-in`` command's place in the CLI, kept apart from the command itself: every
other command (``rewrite`` above all) starts without importing the event store and the
bounce classifier that ``bounce-in`` needs."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``bounce-in`` command to the CLI's subparsers."""
    parser = sub.add_parser(
        "bounce-in",
        parents=[common],
        help="store an out-of-band bounce or spam complaint piped in by the MTA",
        description="Read one message on standard input (a DSN, another kind of bounce, an "
        "ARF spam complaint or an auto-reply sent to a bounce_domain return path) and store "
        "its out_of_band or spam_complaint events. Exit 0: done (or dropped: no valid "
        "return-path token); 75: try again later (event store unavailable).",
    )
    parser.add_argument(
        "recipient",
        nargs="?",
        default="",
        metavar="RECIPIENT",
        help="the report's envelope recipient (Postfix ${recipient}, Sendmail $u)",
    )
    parser.set_defaults(func=_run_bounce_in)


def _run_bounce_in(args: argparse.Namespace) -> int:
    from .command import run

    return run(args)
