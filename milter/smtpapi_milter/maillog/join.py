"""The injections a batch of outcomes is about, found by the MTA's queue id.

The milter records ``mta_queue_id`` on each injection (Postfix ``{i}``, Sendmail ``i``); the
store keeps it in an indexed column (schema migration 6; since migration 12 the index holds
only events that have one). One batch of log lines costs three queries whatever its size: the
injections of its queue ids, the delays already recorded for them (``num_retries``), and for
messages the queue gave up on, what their recipients got.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..events import payload as payload_json
from .outcome import Outcome

CHUNK = 500  # queue ids per IN (...) list: under every driver's parameter limit


@dataclass
class Known:
    """What the store already holds about a batch's queue ids."""

    injections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (queue id, recipient) -> delays recorded so far
    delays: dict[tuple[str, str], int] = field(default_factory=dict)
    # queue id -> its delay/delivery/bounce events, oldest first (expired messages only)
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def lookup(store: Any, queue_ids: Iterable[str], expired: Iterable[str]) -> Known:
    """One read transaction: what the store knows about these queue ids."""
    wanted, gone = set(queue_ids), set(expired)
    known = Known()
    if not wanted and not gone:
        return known
    decode = payload_json.decode
    injections = known.injections

    def work(cur: Any) -> Known:
        for chunk in _chunks(sorted(wanted | gone)):
            marks = ", ".join("?" * len(chunk))
            cur.execute(
                store.sql(
                    "SELECT type, mta_queue_id, rcpt_to, payload FROM events"
                    # <> '': the partial index of known queue ids (schema migration 12)
                    # holds every row this can match; saying so is how the planner knows.
                    f" WHERE mta_queue_id IN ({marks}) AND mta_queue_id <> ''"
                    " AND type IN ('injection', 'delay', 'delivery', 'bounce') ORDER BY id"
                ),
                chunk,
            )
            for kind, queue_id, rcpt, payload in cur.fetchall():
                if kind == "injection":  # most rows: one per outcome of the batch
                    found = injections.get(queue_id)
                    if found is None:
                        injections[queue_id] = [decode(payload)]
                    else:
                        found.append(decode(payload))
                else:
                    _note(known, kind, queue_id, rcpt, payload, queue_id in gone)
        return known

    return store.transaction(work, write=False)


def _note(known: Known, kind: str, queue_id: str, rcpt: str, payload: str, expired: bool):
    """An outcome already stored: a delay counts towards ``num_retries``; an expired
    message's outcomes tell which recipients are still undelivered."""
    if kind == "delay":
        key = (queue_id, rcpt)
        known.delays[key] = known.delays.get(key, 0) + 1
    if expired:
        known.outcomes.setdefault(queue_id, []).append(payload_json.decode(payload))


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def injection_for(injections: list[dict[str, Any]], outcome: Outcome) -> dict[str, Any] | None:
    """The injection of the recipient ``outcome`` is about: the address the milter saw is
    the one the MTA was given (``orig_to``, when an alias rewrote it) or delivered to. A
    message tracked for all recipients alike (``multi_recipient = shared``) has one
    injection without a recipient: every recipient's outcome belongs to it."""
    # Either address, lower-cased; an empty one matches nothing (compared, not put in a set:
    # this runs for every outcome).
    rcpt, orig = outcome.recipient.lower(), outcome.original.lower()
    for injection in injections:
        address = str(injection.get("rcpt_to", "")).lower()
        if address and address in (rcpt, orig):
            return injection
        address = str(injection.get("raw_rcpt_to", "")).lower()
        if address and address in (rcpt, orig):
            return injection
    if len(injections) == 1 and not injections[0].get("rcpt_to"):
        return injections[0]
    return None


def counter() -> defaultdict[tuple[str, str], int]:
    """Delays per (queue id, recipient) seen in this batch, added to the stored ones."""
    return defaultdict(int)
