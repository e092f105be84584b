"""Delivery outcomes in the campaign reports: what the counts mean, and the bounce breakdown.

SparkPost's bounce classes and the category each belongs to, from its table
(https://support.sparkpost.com/docs/deliverability/bounce-classification-codes): hard 10,
30, 90; soft 20-24, 40, 60, 70, 100; block 50-54; admin 25, 80; undetermined 1. A class
this table does not know counts as undetermined.

- ``delivered``, ``delayed``, ``bounced``, ``policy_rejections``: ``delivery``, ``delay``,
  ``bounce`` and ``policy_rejection`` events (a message delayed twice is two delays, as in
  SparkPost's ``count_delayed``). ``hard_bounces`` ... ``undetermined_bounces``: bounces by
  the category of their ``bounce_class``.
- ``out_of_band_bounces``: ``out_of_band`` events (bounces mailed back to the return path,
  bounces_in/) but auto-replies (class 60); ``spam_complaints``: ``spam_complaint`` events
  (ARF reports); ``spam_complaint_rate``: complaints per delivered message, as the other
  rates over delivered (mailbox providers want it under 0.1 %).
- ``delivery_rate``: delivered / injections; ``delivered_open_rate`` and
  ``delivered_click_rate``: unique opens / clicks per delivered message. None without the
  denominator (no deliveries are known until the MTA's log is followed). In totals over
  several campaigns, only campaigns with deliveries count towards these rates.
- ``list_unsubscribes`` and ``link_unsubscribes``: ``list_unsubscribe`` events (the RFC 8058
  one-click POST) and ``link_unsubscribe`` events (a click on a link the sender marked as its
  unsubscribe link), counted apart: the first is the mailbox provider's button, the second
  the sender's own page. Each suppressed its recipient, so machines are not told apart.
  ``unsubscribes``: distinct recipients who did either (one who did both is one).
- ``unsubscribe_rate``: unsubscribes per delivered message, as the other rates over
  delivered.

The class is read from the ``bounce_class`` column (schema migration 9), which the store fills
from the event's own field only. (It used to be found in the JSON payload by a substring test,
which a sender's metadata key ``bounce_class`` could satisfy first.)
"""

from __future__ import annotations

from typing import Any

from ..delivery.bounce_class import BOUNCE_CLASSES, UNDETERMINED  # one list of SparkPost's classes

CATEGORIES = ("hard", "soft", "block", "admin", "undetermined")
AUTO_REPLY = 60


def classes_of(category: str) -> tuple[int, ...]:
    return tuple(n for n, (_, cat) in BOUNCE_CLASSES.items() if cat == category)


def category_of(bounce_class: int) -> str:
    return BOUNCE_CLASSES.get(bounce_class, BOUNCE_CLASSES[UNDETERMINED])[1]


def _in(category: str) -> str:
    return ", ".join(str(n) for n in classes_of(category))


# Over rows that carry a ``bounce_class`` column (see bounce_class_sql): NULL unless a bounce
# or an out_of_band.
COUNTS = (
    ("delivered", "count(CASE WHEN type = 'delivery' THEN 1 END)"),
    ("delayed", "count(CASE WHEN type = 'delay' THEN 1 END)"),
    ("bounced", "count(CASE WHEN type = 'bounce' THEN 1 END)"),
    *(
        (
            f"{category}_bounces",
            f"count(CASE WHEN type = 'bounce' AND bounce_class IN ({_in(category)}) THEN 1 END)",
        )
        for category in CATEGORIES
    ),
    # Auto-replies (class 60) come back to the return path too, but bounced nothing.
    (
        "out_of_band_bounces",
        f"count(CASE WHEN type = 'out_of_band' AND bounce_class <> {AUTO_REPLY} THEN 1 END)",
    ),
    ("spam_complaints", "count(CASE WHEN type = 'spam_complaint' THEN 1 END)"),
    ("policy_rejections", "count(CASE WHEN type = 'policy_rejection' THEN 1 END)"),
    ("list_unsubscribes", "count(CASE WHEN type = 'list_unsubscribe' THEN 1 END)"),
    ("link_unsubscribes", "count(CASE WHEN type = 'link_unsubscribe' THEN 1 END)"),
    (
        "unsubscribes",
        "count(DISTINCT CASE WHEN type IN ('list_unsubscribe', 'link_unsubscribe')"
        " THEN rcpt_to END)",
    ),
)
# rate -> (numerator, denominator), both count names
RATES = {
    "delivery_rate": ("delivered", "injections"),
    "delivered_open_rate": ("unique_opens", "delivered"),
    "delivered_click_rate": ("unique_clicks", "delivered"),
    "unsubscribe_rate": ("unsubscribes", "delivered"),
    "spam_complaint_rate": ("spam_complaints", "delivered"),
}

# Over several campaigns, the rates over delivered count only campaigns whose deliveries are
# known (the log may be followed for some of them only): rate -> numerator, per campaign row.
TOTAL_RATES = {
    "delivered_open_rate": "CASE WHEN delivered > 0 THEN unique_opens ELSE 0 END",
    "delivered_click_rate": "CASE WHEN delivered > 0 THEN unique_clicks ELSE 0 END",
    "unsubscribe_rate": "CASE WHEN delivered > 0 THEN unsubscribes ELSE 0 END",
    "spam_complaint_rate": "CASE WHEN delivered > 0 THEN spam_complaints ELSE 0 END",
}


def bounce_class_sql() -> str:
    """The bounce class of a row as an integer (NULL for other types); a class SparkPost's
    table does not know counts as undetermined."""
    known = ", ".join(str(n) for n in BOUNCE_CLASSES if n != UNDETERMINED)
    return (
        "CASE WHEN type IN ('bounce', 'out_of_band') THEN CASE WHEN bounce_class IN"
        f" ({known}) THEN bounce_class ELSE {UNDETERMINED} END END"
    )


def by_class_sql(where: str) -> str:
    """Bounces per class in a scope (``where`` from Scope.where), most first."""
    where = (where + " AND" if where else " WHERE") + " type = 'bounce'"
    return (
        f"SELECT bounce_class, count(*) AS n FROM (SELECT {bounce_class_sql()}"
        f" AS bounce_class FROM events{where}) AS b GROUP BY bounce_class"
        " ORDER BY n DESC, bounce_class"
    )


def by_domain_sql(where: str, position: str, binary: str) -> str:
    """Bounces per recipient domain in a scope, split by category, most first (LIMIT ?)."""
    where = (where + " AND" if where else " WHERE") + " type = 'bounce'"
    at = position.format("rcpt_to", "'@'")
    splits = ", ".join(
        f"count(CASE WHEN bounce_class IN ({_in(category)}) THEN 1 END)" for category in CATEGORIES
    )
    return (
        f"SELECT domain, count(*) AS n, {splits} FROM (SELECT substr(rcpt_to, {at} + 1)"
        f" AS domain, {bounce_class_sql()} AS bounce_class FROM events{where}) AS b"
        f" GROUP BY domain ORDER BY n DESC, domain {binary} LIMIT ?"
    )


def class_row(row: tuple[Any, ...]) -> dict[str, Any]:
    number, count = int(row[0]), int(row[1])
    name, category = BOUNCE_CLASSES.get(number, BOUNCE_CLASSES[UNDETERMINED])
    return {"bounce_class": number, "name": name, "category": category, "bounces": count}


def domain_row(row: tuple[Any, ...]) -> dict[str, Any]:
    domain, count, *splits = row
    found: dict[str, Any] = {"domain": domain, "bounces": int(count)}
    found.update({f"{c}_bounces": int(n) for c, n in zip(CATEGORIES, splits, strict=True)})
    return found
