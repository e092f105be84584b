"""``smtpapi-milter suppression list|add|remove|import|export``: the list from a shell.

Like ``events`` and ``erase``, these never create a store, and run as root they act as the
SQLite store's owner (state_owner.py). Exit codes are the CLI's: 2 bad usage or a refused
entry or file, 3 configuration, 4 store missing or unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from .. import state_owner
from ..config import load_config
from ..terminal import terminal_json, visible
from . import formats
from .store import SOURCES, TYPES, SuppressionError, list_entries, suppress, suppress_rows
from .store import unsuppress as remove_entries

if TYPE_CHECKING:  # the store is opened by `run`, not needed to register the subcommand
    from ..events.store import EventStore

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 2, 4
PAGE = 5000
PROG = "smtpapi-milter suppression"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``suppression`` command to the CLI's subparsers."""
    parser = sub.add_parser(
        "suppression",
        parents=[common],
        help="the suppression list: recipients not to send mail to",
        description="Show and change the suppression list (SparkPost's shape: one entry per "
        "recipient and type, transactional or non_transactional).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="show entries")
    listing.add_argument("--source", choices=SOURCES, help="only entries from this source")
    listing.add_argument("--search", metavar="TEXT", help="part of the recipient or description")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    add = actions.add_parser("add", parents=[common], help="suppress a recipient")
    add.add_argument("address", metavar="ADDR")
    add.add_argument("--type", choices=TYPES, default="non_transactional")
    add.add_argument("--description", default="", metavar="D")
    remove = actions.add_parser("remove", parents=[common], help="stop suppressing a recipient")
    remove.add_argument("address", metavar="ADDR")
    remove.add_argument("--type", choices=TYPES, help="only this type (default: both)")
    load = actions.add_parser(
        "import",
        parents=[common],
        help="add or update entries from a CSV file",
        description="Columns (header row, any case): recipient, and type or SparkPost's "
        "transactional/non_transactional booleans, description, source. All or nothing: any "
        "bad row fails the import naming the file, line and column, and nothing is imported.",
    )
    load.add_argument("file", metavar="FILE.csv")
    actions.add_parser(
        "export",
        parents=[common],
        help="print every entry as CSV (SparkPost's column names)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..events.store import StoreUnavailable, open_store

    config = load_config(args.config)
    rows = None
    if args.action == "import":  # read and check the whole file before touching the store
        try:
            with open(args.file, encoding="utf-8-sig", newline="") as text:
                rows = formats.read_csv(text, args.file, time.time())
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read {args.file}: {exc}", EXIT_USAGE)
        except formats.CsvImportError as exc:
            return _fail(str(exc), EXIT_USAGE)
    try:
        state_owner.enter_store(config)  # never creates a store; root acts as its owner
        store = open_store(config.event_store_url)
    except (StoreUnavailable, state_owner.NoStore) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    with contextlib.closing(store):
        try:
            return _act(store, args, rows)
        except SuppressionError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except StoreUnavailable as exc:
            return _fail(str(exc), EXIT_UNAVAILABLE)


def _act(store: EventStore, args: argparse.Namespace, rows: Any) -> int:
    if args.action == "add":
        suppress(store, args.address, type=args.type, description=args.description)
        print(f"suppressed {args.address.strip().lower()} ({args.type})")
    elif args.action == "remove":
        removed = remove_entries(store, args.address, args.type)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} of {args.address}")
    elif args.action == "import":
        suppress_rows(store, rows)
        print(f"imported {len(rows)} entries from {args.file}")
    elif args.action == "export":
        formats.write_csv(_all(store), sys.stdout)
    elif args.format == "json":
        for entry in _all(store, source=args.source, search=args.search):
            text = json.dumps(formats.api_object(entry), ensure_ascii=False)
            sys.stdout.write(terminal_json(text) + "\n")
    else:
        print(_table(list(_all(store, source=args.source, search=args.search))))
    sys.stdout.flush()
    return EXIT_OK


def _all(store: EventStore, **filters: Any):
    """Every matching entry, a page at a time (a list can hold millions)."""
    after = None
    while True:
        page = list_entries(store, limit=PAGE, after=after, **filters)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].cursor


def _table(entries: list) -> str:
    if not entries:
        return "no entries"
    header = ("RECIPIENT", "TYPE", "SOURCE", "UPDATED", "DESCRIPTION")
    rows = [(e.recipient, e.type, e.source, formats.iso(e.updated), e.description) for e in entries]
    cells = [[visible(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in cells
    )


def kept_after_erase(store: EventStore, address: str, removed: bool) -> str:
    """What ``erase`` says about the recipient's suppression entries."""
    if removed:
        return "its suppression list entries were removed too"
    kinds = [entry.type for entry in list_entries(store, recipient=address, limit=None)]
    if not kinds:
        return "it has no suppression list entry"
    return (
        f"its suppression list entries ({', '.join(kinds)}) are kept, so it gets no mail it "
        "opted out of (--include-suppression removes them)"
    )


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
