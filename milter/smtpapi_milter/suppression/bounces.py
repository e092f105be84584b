"""Hard bounces put the recipient on the suppression list (SPEC 14).

The maillog follower calls :func:`suppress_bounces` inside the transaction that stores a
batch's events and its log position, so the entry commits with the bounce event: a restart
neither loses one nor makes one twice. Bounces whose class is in ``[suppression]
bounce_classes`` (10 Invalid Recipient and 30 Generic Bounce: No RCPT by default) suppress the
recipient for both types of mail: an address that does not exist does not exist for receipts
either (SparkPost's bounce rule entries block both too). Source ``bounce``; the description
names the class and the start of the receiving server's reply.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from .store import TYPES, SuppressionError, entry_row, suppress_rows

DEFAULT_CLASSES = frozenset({10, 30})
REASON_CHARS = 200


def bounce_rows(
    events: Sequence[dict[str, Any]], classes: Collection[int], now: float
) -> list[tuple[Any, ...]]:
    """The suppression rows the hard bounces among ``events`` ask for."""
    rows = []
    for event in events:
        if event.get("type") != "bounce" or not event.get("rcpt_to"):
            continue
        try:
            bounce_class = int(event.get("bounce_class", 0))
        except (TypeError, ValueError):
            continue
        if bounce_class not in classes:
            continue
        reason = str(event.get("raw_reason", ""))[:REASON_CHARS]
        description = f"bounce class {bounce_class}: {reason}".rstrip(": ")
        for kind in TYPES:
            try:
                rows.append(entry_row(event["rcpt_to"], kind, "bounce", description, now))
            except SuppressionError:
                break  # an unknown recipient the log named oddly: nothing to suppress
    return rows


def suppress_bounces(
    store: Any, cur: Any, events: Sequence[dict[str, Any]], classes: Collection[int]
) -> int:
    """Suppress the hard-bounced recipients of ``events`` in the caller's transaction."""
    rows = bounce_rows(events, classes, time.time())
    return suppress_rows(store, rows, cur=cur) if rows else 0
