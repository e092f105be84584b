"""The delivery outcome types (delivery, delay, bounce, policy_rejection, and the reports
mailed back: out_of_band, spam_complaint) wherever types are named: the events command, the
events API, webhooks (SparkPost's message_event class), retention and erase (SPEC 7, 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.events.model import EVENT_CLASSES, envelope, policy_rejection_event
from smtpapi_milter.events.store import open_store
from smtpapi_milter.mta.state import STORE_DOWN
from smtpapi_milter.policy import PolicyFailure, PolicyVerdict
from smtpapi_milter.rejections import is_policy_refusal
from smtpapi_milter.replies import (
    EXTRA_RECIPIENT_DEFERRED,
    TRANSMISSION_ID_UNAVAILABLE,
    SmtpReply,
    SmtpReplyError,
    invalid,
)

from .dashboard_data import http_get, injection, outcome
from .harness.smtpapi import ROOT, RunningTracker
from .test_webhooks import dispatch, hook, opened, receiver, sqlite_url  # noqa: F401 (fixtures)

OUTCOMES = ("delivery", "delay", "bounce", "policy_rejection", "out_of_band", "spam_complaint")
RCPT = "Pat.Reader@Example.org"


def traffic(now: float, n: str = "1") -> list[dict]:
    """One injection and each outcome type, for the same recipient (event ids end in ``n``)."""
    sent = injection(n, "autumn", RCPT, now - 600, ["news"])
    return [
        sent,
        outcome(n, "delivery", sent, now - 500),
        outcome(f"{n}-d", "delay", sent, now - 400, bounce_class=22),
        outcome(n, "bounce", sent, now - 300, bounce_class=10),
        policy_rejection_event(
            event_id=f"rej-{n}",
            now=now - 200,
            raw_reason=f"550 5.7.1 <{RCPT}> blocked by site policy",
            rcpt_to=RCPT,
            msg_from="news@example.com",
            campaign_id="autumn",
        ),
        outcome(n, "out_of_band", sent, now - 150, bounce_class=10, reply="550 5.1.1 gone"),
        {
            **outcome(n, "spam_complaint", sent, now - 100, reply="-"),
            "fbtype": "abuse",
            "report_by": "fbl.example.net",
        },
    ]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "smtpapi_milter.cli", *args, "--config", str(config)]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture()
def tracker(tmp_path):
    with RunningTracker(tmp_path) as running:
        store = open_store(load_config(str(running.config_path)).event_store_url)
        try:
            store.record(traffic(time.time()))
        finally:
            store.close()
        yield running


def test_each_type_is_a_message_event_for_webhooks():
    for kind in OUTCOMES:
        assert EVENT_CLASSES[kind] == "message_event"
        assert list(envelope({"type": kind})["msys"]) == ["message_event"]


def test_policy_rejection_fields_are_sparkposts():
    event = policy_rejection_event(
        event_id="e",
        now=1700000000.9,
        raw_reason=f"550 5.7.1 <{RCPT}> blocked",
        rcpt_to=RCPT,
        msg_from="news@example.com",
    )
    assert (event["type"], event["timestamp"], event["error_code"]) == (
        "policy_rejection",
        "1700000000",
        "550",
    )
    assert (event["rcpt_to"], event["raw_rcpt_to"]) == (RCPT.lower(), RCPT)
    assert event["reason"] == "550 5.7.1 blocked"  # the address left out: reasons group
    assert event["bounce_class"] == "25"  # SparkPost's "Admin Failure"


def test_events_command_filters_and_shows_the_new_types(tracker):
    config = tracker.config_path
    found = cli(config, "events", "--type", "delivery,bounce", "--format", "json")
    assert found.returncode == 0, found.stderr
    kinds = [json.loads(line)["type"] for line in found.stdout.splitlines()]
    assert kinds == ["delivery", "bounce"]
    table = cli(config, "events", "--type", "policy_rejection", "--format", "table")
    assert "blocked by site policy" in table.stdout and "person" not in table.stdout
    table = cli(config, "events", "--type", "spam_complaint", "--format", "table")
    assert "abuse reported by fbl.example.net" in table.stdout and "person" not in table.stdout
    wrong = cli(config, "events", "--type", "bounced")
    assert wrong.returncode != 0 and "policy_rejection" in wrong.stderr


def test_events_api_filters_the_new_types(tracker):
    for kind in OUTCOMES:
        path = f"/api/v1/events?type={kind}"
        status, _, body = http_get(tracker.admin_port, path, token=tracker.admin_token)
        assert status == 200
        assert [e["type"] for e in json.loads(body)["results"]] == [kind]


def test_erase_and_retention_cover_the_new_types(tracker):
    store = open_store(load_config(str(tracker.config_path)).event_store_url)
    try:  # retention first: an erased recipient's later events are not stored at all
        store.record(traffic(time.time() - 10 * 86400, "old"))
        assert store.delete_older_than(time.time() - 86400) == 1 + len(OUTCOMES)
    finally:
        store.close()
    address = urllib.parse.quote(RCPT.upper())
    listed = cli(tracker.config_path, "events", "--rcpt", RCPT, "--format", "json")
    assert len(listed.stdout.splitlines()) == 1 + len(OUTCOMES)
    erased = cli(tracker.config_path, "erase", RCPT.upper())
    assert erased.returncode == 0 and f"erased {1 + len(OUTCOMES)} events" in erased.stdout
    path = f"/api/v1/events?rcpt={address}"
    status, _, body = http_get(tracker.admin_port, path, token=tracker.admin_token)
    assert json.loads(body)["results"] == []


def test_webhooks_deliver_the_new_types_as_message_events(
    sqlite_url,  # noqa: F811
    opened,  # noqa: F811
    dispatch,  # noqa: F811
    receiver,  # noqa: F811
):
    store = opened(sqlite_url)
    store.record(traffic(time.time()))
    kinds = ["bounce", "policy_rejection", "out_of_band", "spam_complaint"]
    dispatch(store, [hook(receiver.url(), events=kinds)])
    receiver.wait_until(lambda: len(receiver.received) == 1)
    sent = json.loads(receiver.received[0].body)
    assert [(list(e["msys"]), e["msys"]["message_event"]["type"]) for e in sent] == [
        (["message_event"], kind) for kind in kinds
    ]


@pytest.mark.parametrize(
    "error, recorded",
    [
        (invalid("X-MSYS-API is not valid JSON"), True),
        (SmtpReplyError(EXTRA_RECIPIENT_DEFERRED), True),
        (PolicyVerdict(SmtpReply("550", "5.7.1", "blocked")), True),
        (PolicyVerdict(SmtpReply("451", "4.3.0", "a policy may say anything")), True),
        (SmtpReplyError(STORE_DOWN), False),  # our trouble: the client retries the same mail
        (SmtpReplyError(TRANSMISSION_ID_UNAVAILABLE), False),
        (PolicyFailure(SmtpReply("451", "4.3.0", "policy raised")), False),
    ],
)
def test_only_verdicts_on_the_mail_are_policy_rejections(error, recorded):
    assert is_policy_refusal(error) is recorded
