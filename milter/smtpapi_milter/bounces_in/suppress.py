"""The suppression entries out-of-band reports ask for (SPEC 14).

A hard out-of-band bounce (its class in ``[suppression] bounce_classes``: 10 and 30 by
default) suppresses the recipient for both kinds of mail, as a hard bounce from the MTA's log
does (suppression/bounces.py). A spam complaint suppresses non-transactional mail only: the
reader complained about a mailing, and still expects their receipts (SparkPost does the same).
An auto-reply never suppresses anyone, even if an operator lists class 60.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ..suppression.bounces import REASON_CHARS
from ..suppression.store import NON_TRANSACTIONAL, TYPES, SuppressionError, entry_row


def suppression_rows(
    events: Sequence[dict[str, Any]], classes: Collection[int], now: float
) -> list[tuple[Any, ...]]:
    rows = []
    for event in events:
        rcpt = event.get("rcpt_to")
        if not rcpt:
            continue
        try:
            if event["type"] == "spam_complaint":
                description = f"spam complaint ({event.get('fbtype') or 'abuse'})"
                by = event.get("report_by")
                description += f" reported by {by}" if by else ""
                rows.append(entry_row(rcpt, NON_TRANSACTIONAL, "spam_complaint", description, now))
                continue
            if event["type"] != "out_of_band" or event.get("auto_reply"):
                continue
            bounce_class = int(event.get("bounce_class", 0))
            if bounce_class not in classes or bounce_class == 60:
                continue
            reason = str(event.get("raw_reason", ""))[:REASON_CHARS]
            description = f"out-of-band bounce class {bounce_class}: {reason}".rstrip(": ")
            for kind in TYPES:
                rows.append(entry_row(rcpt, kind, "bounce", description, now))
        except (SuppressionError, TypeError, ValueError):
            continue  # an address the report named oddly: nothing to suppress
    return rows
