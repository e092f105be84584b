"""``delivery``, ``delay`` and ``bounce`` events in SparkPost's message_event shape (SPEC 13).

What the message was (campaign, tags, metadata, transmission and message ids, subject,
senders, injection time) comes from the injection the outcome joined; what happened comes
from the log: ``bounce_class`` (by the classifier's rules), ``error_code``, ``raw_reason``
(the reply), ``reason`` (the reply without the recipient's address, so reports can group
equal reasons), ``num_retries``, ``queue_time`` (milliseconds), ``delv_method``,
``ip_address`` (the remote host), ``routing_domain``, ``outbound_tls``.

Event ids are derived from what they record, not drawn at random: a line handled twice (it
cannot be, but) gives the same id, which the store ignores; and a recipient's final outcome
(delivered or bounced) has one id per injection, so Postfix saying a message expired twice
(the queue manager's line and the per-recipient line) records one bounce.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from ..events import payload
from ..events.columns import bounce_class_column, tags_column, text_column
from .outcome import BOUNCED, DEFERRED, DELIVERED, MessageExpired, Outcome

# Copied from the injection, in SparkPost's order.
INJECTION_FIELDS = (
    "transmission_id",
    "message_id",
    "campaign_id",
    "customer_id",
    "rcpt_to",
    "raw_rcpt_to",
    "rcpt_tags",
    "rcpt_meta",
    "msg_from",
    "friendly_from",
    "subject",
    "msg_size",
    "injection_time",
)
EXPIRED_REASON = "message expired in the queue before it could be delivered"


def event_id(seconds: float, key: str) -> str:
    """A SparkPost-like decimal id: milliseconds, then 80 bits of a hash of ``key``."""
    # A copy of a hasher made once: the same BLAKE2b (80-bit digest, no key) without
    # parsing the constructor's keyword arguments again (event_id runs for every outcome).
    hasher = _BLAKE2B_80.copy()
    hasher.update(key.encode("utf-8", "replace"))
    return str((int(seconds * 1000) << 80) | int.from_bytes(hasher.digest()))


_BLAKE2B_80 = hashlib.blake2b(digest_size=10)


def outcome_event(
    outcome: Outcome,
    injection: dict[str, Any] | None,
    retries: int,
    bounce_class: int | None,
) -> dict[str, Any]:
    """The event for one recipient's attempt; ``injection`` None records what the log gives
    (``record_unknown``). ``bounce_class`` for bounces and delays."""
    kind = outcome.kind
    if injection is not None and kind != DEFERRED:
        # One final outcome per injected recipient (see the module docstring).
        identity = event_id(_injected_at(injection), f"final\0{injection.get('event_id')}")
    else:
        identity = event_id(outcome.time, f"{kind}\0{outcome.key}")
    event: dict[str, Any] = {
        "type": kind,
        "event_id": identity,
        "timestamp": str(int(outcome.time)),
    }
    if injection is not None:
        # Straight into the event, in INJECTION_FIELDS order, those the injection has.
        names, values = _fields_of(tuple(injection))
        event.update(zip(names, values(injection), strict=True))
        if not event.get("rcpt_to"):  # multi_recipient = shared: the log names the recipient
            event["rcpt_to"] = (outcome.original or outcome.recipient).lower()
            event["raw_rcpt_to"] = outcome.original or outcome.recipient
    else:
        _add_logged_fields(event, outcome)
    event["mta_queue_id"] = outcome.queue_id
    event["delv_method"] = outcome.delv_method
    event["ip_address"] = outcome.relay_ip
    event["routing_domain"] = outcome.routing_domain
    if outcome.queue_seconds is not None:
        event["queue_time"] = str(int(outcome.queue_seconds * 1000))
    event["num_retries"] = str(retries)
    if outcome.tls is not None:
        event["outbound_tls"] = "1" if outcome.tls else "0"
    if kind != DELIVERED:
        addresses = (outcome.recipient, outcome.original, str(event.get("raw_rcpt_to", "")))
        event["bounce_class"] = str(bounce_class if bounce_class is not None else 1)
        event["error_code"] = outcome.code
        event["raw_reason"] = outcome.reply
        event["reason"] = without_addresses(outcome.reply, addresses)
    return event


def outcome_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """``events.store.event_row(event)`` for an event :func:`outcome_event` made, in fewer
    steps (once per outcome): such an event has a str ``event_id`` and ``type``, a whole
    number of seconds as ``timestamp``, and none of a click's fields (user agent, link);
    what it copied from the injection is cleaned as event_row cleans it. Tests hold the two
    equal."""
    get = event.get
    tags = get("rcpt_tags")
    return (
        event["event_id"],
        event["type"],
        float(event["timestamp"]),
        text_column(get("transmission_id")),
        text_column(get("message_id")),
        text_column(get("campaign_id")),
        text_column(get("rcpt_to")).lower(),
        payload.encode(event),
        0,  # machine: no user agent
        "",  # target_link_url
        "",  # target_link_name
        "" if tags is None else tags_column(tags),
        text_column(get("mta_queue_id")),
        bounce_class_column(event),
    )


def expired_outcome(
    expired: MessageExpired, injection: dict[str, Any], last_delay: dict[str, Any] | None
) -> Outcome:
    """The bounce of one recipient of a message the queue gave up on, told as the last
    delay told it (its reply, relay and method), else as a plain expiry."""
    previous = last_delay or {}
    rcpt = str(injection.get("raw_rcpt_to") or injection.get("rcpt_to") or "")
    return Outcome(
        kind=BOUNCED,
        time=expired.time,
        queue_id=expired.queue_id,
        recipient=rcpt,
        original="",
        reply=str(previous.get("raw_reason") or EXPIRED_REASON),
        code=str(previous.get("error_code") or ""),
        enhanced="4.4.7",  # RFC 3463: delivery time expired
        queue_seconds=None,
        relay_host="",
        relay_ip=str(previous.get("ip_address") or ""),
        delv_method=str(previous.get("delv_method") or "esmtp"),
        tls=None,
        key=f"expired\0{expired.queue_id}\0{rcpt}",
    )


@functools.lru_cache(maxsize=64)  # injections come in a few shapes (keys in one order)
def _fields_of(keys: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[dict], tuple]]:
    """Which INJECTION_FIELDS an injection with these keys has, and a function giving their
    values in that order: copied in C, not a test and a store per field in Python."""
    names = tuple(name for name in INJECTION_FIELDS if name in keys)
    if len(names) > 1:
        return names, operator.itemgetter(*names)
    return names, lambda injection: tuple(injection[name] for name in names)


def _add_logged_fields(event: dict[str, Any], outcome: Outcome) -> None:
    """The message fields of an event no injection joined: what the log gives."""
    address = outcome.original or outcome.recipient
    event.update(
        transmission_id="",
        message_id="",
        campaign_id="",
        customer_id="",
        rcpt_to=address.lower(),
        raw_rcpt_to=address,
        rcpt_tags=[],
        rcpt_meta={},
        msg_from="",
        friendly_from="",
        subject="",
        injection_time="",
    )


def _injected_at(injection: dict[str, Any]) -> float:
    try:
        seconds = float(injection.get("timestamp", 0))
    except (TypeError, ValueError):
        return 0.0
    # "inf" or "nan" read as a float but has no millisecond for the event id (hypothesis
    # found a stored injection whose timestamp was "INF" raising OverflowError).
    return seconds if math.isfinite(seconds) else 0.0


def without_addresses(text: str, addresses: tuple[str, ...]) -> str:
    """``text`` with each address (and the angle brackets around it) taken out, in any case."""
    for address in {a.lower() for a in addresses if a}:
        lower = text.lower()
        if len(lower) != len(text):  # lowercasing changed lengths: let re handle the case
            text = re.sub(r"<?" + re.escape(address) + ">?", "", text, flags=re.IGNORECASE)
            continue
        start = lower.find(address)
        while start >= 0:
            end = start + len(address)
            if text[start - 1 : start] == "<" and text[end : end + 1] == ">":
                start, end = start - 1, end + 1
            text, lower = text[:start] + text[end:], lower[:start] + lower[end:]
            start = lower.find(address, start)
    return " ".join(text.split())
