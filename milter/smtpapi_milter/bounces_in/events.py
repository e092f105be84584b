"""``out_of_band`` and ``spam_complaint`` events, joined to the injection the return path names.

SparkPost's message_event fields (https://developers.sparkpost.com/api/webhooks/, event types
``out_of_band`` and ``spam_complaint``): what the message was comes from its injection event
(campaign, tags, metadata, transmission and message ids, subject, the original envelope sender
as ``msg_from``), found by transmission id (indexed by schema migration 8) and the copy index
in the token; what happened comes from the report.

Event ids are derived from the report and the copy, not drawn at random: when the store fails
after a report was read, the MTA pipes the same report again, and its events get the same ids,
which the store ignores the second time.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..ids import EPOCH_MS, message_id
from ..maillog.outcome_events import INJECTION_FIELDS, event_id, without_addresses
from .classify import AUTO_REPLY, Failure, Report
from .return_path import ReturnPathToken


def find_injection(store: Any, token: ReturnPathToken) -> dict[str, Any] | None:
    """The injection of the copy ``token`` names (a shared body's one injection), or None."""

    def work(cur: Any) -> list[dict[str, Any]]:
        cur.execute(
            store.sql(
                "SELECT payload FROM events WHERE transmission_id = ? AND type = 'injection'"
                " ORDER BY id"
            ),
            [token.transmission_id],
        )
        return [json.loads(row[0]) for row in cur.fetchall()]

    injections = store.transaction(work, write=False)
    wanted = message_id(token.transmission_id, token.index)
    for injection in injections:
        if injection.get("message_id") == wanted:
            return injection
    return injections[0] if token.shared and injections else None


def report_key(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def build_events(
    report: Report,
    token: ReturnPathToken,
    injection: dict[str, Any] | None,
    now: float,
    key: str,
) -> list[dict[str, Any]]:
    """The events one report gives: one complaint, or one event per failed recipient (a copy
    for one recipient gives at most one: the report can only be about that copy)."""
    if report.kind == "arf":
        rcpt = report.complained_about
        event = _base("spam_complaint", token, injection, now, key, rcpt)
        event["fbtype"] = report.feedback_type
        event["report_by"] = report.report_by
        event["report_to"] = report.report_to
        event["user_agent"] = report.user_agent
        return [event]
    failures = report.failures
    if not token.shared:
        failures = failures[:1]
    events = []
    for failure in failures:
        event = _base(
            "out_of_band", token, injection, now, f"{key}\0{failure.recipient}", failure.recipient
        )
        event.update(_failure_fields(failure, event))
        if report.kind == AUTO_REPLY:
            event["auto_reply"] = True  # never a suppression, whatever bounce_classes says
        events.append(event)
    return events


def _base(
    kind: str,
    token: ReturnPathToken,
    injection: dict[str, Any] | None,
    now: float,
    key: str,
    reported_rcpt: str,
) -> dict[str, Any]:
    identity_key = f"{kind}\0{token.transmission_id}\0{token.index}\0{key}"
    event: dict[str, Any] = {
        "type": kind,
        "event_id": event_id(_transmitted_at(token), identity_key),
        "timestamp": str(int(now)),
    }
    if injection is not None:
        event.update({name: injection[name] for name in INJECTION_FIELDS if name in injection})
    else:
        event.update(
            {
                "transmission_id": token.transmission_id,
                "message_id": message_id(token.transmission_id, token.index),
                "campaign_id": "",
                "customer_id": "",
                "rcpt_to": "",
                "raw_rcpt_to": "",
                "rcpt_tags": [],
                "rcpt_meta": {},
                "msg_from": "",
                "friendly_from": "",
                "subject": "",
            }
        )
    if not event.get("rcpt_to"):  # a shared body (or no injection): the report names it
        event["rcpt_to"] = reported_rcpt.lower()
        event["raw_rcpt_to"] = reported_rcpt
    event["delv_method"] = "esmtp"
    return event


def _failure_fields(failure: Failure, event: dict[str, Any]) -> dict[str, Any]:
    addresses = (failure.recipient, str(event.get("raw_rcpt_to", "")))
    reason = failure.raw_reason
    if failure.status and failure.status not in reason:
        reason = f"{failure.status} {reason}".strip()
    return {
        "bounce_class": str(failure.bounce_class),
        "error_code": failure.error_code,
        "raw_reason": failure.raw_reason,
        "reason": without_addresses(reason, addresses),
        "routing_domain": failure.recipient.rpartition("@")[2].lower()
        or str(event.get("rcpt_to", "")).rpartition("@")[2],
        "remote_mta": failure.remote_mta,
        "dsn_action": failure.action,
    }


def _transmitted_at(token: ReturnPathToken) -> float:
    """Unix seconds of the transmission: its id's high bits (ids.py) are its milliseconds."""
    return ((int(token.transmission_id) >> 22) + EPOCH_MS) / 1000


_RECEIVED = re.compile(rb"^Received:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M | re.I)


def from_sending_mta(report: Report, injection: dict[str, Any] | None, raw: bytes) -> bool:
    """Whether a DSN was written by the MTA that took the copy from the milter: a failure at
    its own delivery attempt (a refusal at RCPT, an expiry), which its log already tells and
    the maillog follower records as ``bounce``; not an asynchronous, out-of-band one.

    Told by the returned copy's headers: the Received field that MTA added names the queue id
    the injection recorded (``... by HOST ... id QUEUEID``), and its HOST is the DSN's
    Reporting-MTA. A remote server's DSN names the remote server instead."""
    queue_id = str((injection or {}).get("mta_queue_id") or "")
    if report.kind != "dsn" or not report.reporting_mta or not queue_id:
        return False
    wanted = re.compile(rb"\bid\s+" + re.escape(queue_id.encode()) + rb"\b")
    for field in _RECEIVED.finditer(raw):
        text = b" ".join(field[1].split())
        by = re.search(rb"\bby\s+([^\s;()]+)", text)
        if wanted.search(text) and by is not None:
            return by[1].decode("latin-1").lower().rstrip(".") == report.reporting_mta.rstrip(".")
    return False
