"""What the milter records about each message, through a real private Postfix (SPEC 13).

The injection event names the queue id Postfix gave the message (its ``{i}`` macro at end of
message), so the MTA's log lines about that message join to it; split mode's re-injected
copies carry the queue id the re-injection listener answered with. When the milter itself
refuses a message or a recipient, a ``policy_rejection`` event holds the reply the client
got. Events are read back through ``smtpapi-milter events`` as an operator would.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.ports import free_port
from smtpapi_milter.sandbox.postfix import PrivatePostfix

from . import corpus
from .harness.smtpapi import ROOT, RunningMilter

HTML = b'<html><body><a href="https://example.com/a">a</a></body></html>\r\n'
TRACKED = (
    b'X-MSYS-API: {"campaign_id": "spring", "tags": ["t1"], "metadata": {"k": "v"},'
    b' "options": {"open_tracking": true, "click_tracking": true}}'
)
# Postfix's own Received field: "... by HOST (Postfix) with ESMTP id QUEUEID for <...>".
RECEIVED_ID = re.compile(rb"^Received:.*?\(Postfix\) with E?SMTP id ([0-9A-Za-z]+)", re.S | re.M)


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def mta(milter: RunningMilter, capture: CaptureServer, **kwargs) -> PrivatePostfix:
    return PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port, **kwargs)


def send(port: int, message: bytes, rcpts: list[str], sender="news@example.com") -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(sender, rcpts, message)


def events(milter: RunningMilter, kind: str) -> list[dict]:
    """The stored events of one type, through the operator's command."""
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "events", "--config"]
    argv += [str(milter.config_path), "--type", kind, "--format", "json"]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines()]


def first_queue_id(data: bytes) -> str:
    """The queue id in the topmost Received field: the Postfix that last took the mail."""
    match = RECEIVED_ID.search(data)
    assert match, data[:600]
    return match.group(1).decode()


def test_injection_event_names_the_queue_id_postfix_logs(tmp_path, capture):
    message = corpus.wrap_html(HTML, "8bit", TRACKED)
    rcpt = "Jane.Doe@Example.org"  # as the sender wrote it; Postfix logs it so
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, message, [rcpt])
        (delivered,) = capture.wait_for(1, timeout=30)
        queue_id = first_queue_id(delivered.data)
        logged = postfix.wait_for_log(rf"{queue_id}: to=<([^>]*)>.*status=sent", timeout=30)
        (event,) = events(milter, "injection")
    assert event["mta_queue_id"] == queue_id
    assert re.search(r"to=<([^>]*)>", logged).group(1) == event["raw_rcpt_to"] == rcpt
    assert event["rcpt_to"] == rcpt.lower()


def test_split_copies_carry_the_queue_ids_of_their_reinjection(tmp_path, capture):
    reinject_port = free_port()
    milter = RunningMilter(
        tmp_path, smtpapi={"multi_recipient": "split", "reinject_to": f"127.0.0.1:{reinject_port}"}
    )
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    message = corpus.wrap_html(HTML, "8bit", TRACKED)
    rcpts = ["one@example.org", "two@example.org", "three@example.org"]
    with milter, mta(milter, capture, extra_master_cf=listener) as postfix:
        assert send(postfix.smtp_port, message, rcpts) == {}
        delivered = capture.wait_for(3, timeout=60)
        injections = events(milter, "injection")
    seen = {copy.rcpt_tos[0]: first_queue_id(copy.data) for copy in delivered}
    recorded = {event["rcpt_to"]: event["mta_queue_id"] for event in injections}
    assert recorded == seen
    assert len(set(seen.values())) == 3  # one transaction kept, two re-injected


def refused(port: int, message: bytes, rcpt: str) -> tuple[int, bytes]:
    """The (code, text) Postfix answered with, at RCPT or at the end of DATA."""
    with pytest.raises((smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused)) as info:
        send(port, message, [rcpt])
    error = info.value
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return error.recipients[rcpt]
    return error.smtp_code, error.smtp_error


def reply_line(reply: tuple[int, bytes]) -> str:
    return f"{reply[0]} {reply[1].decode()}"


def test_invalid_header_is_refused_and_recorded_as_a_policy_rejection(tmp_path, capture):
    message = corpus.wrap_html(HTML, "8bit", b'X-MSYS-API: {"metadata": ["x"]}')
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        error = refused(postfix.smtp_port, message, "jane@example.org")
        (event,) = events(milter, "policy_rejection")
    assert reply_line(error) == ("550 5.6.0 X-MSYS-API 'metadata' must be of type 'json object'")
    assert event["raw_reason"] == reply_line(error)
    assert (event["error_code"], event["bounce_class"]) == ("550", "25")
    assert (event["rcpt_to"], event["msg_from"]) == ("jane@example.org", "news@example.com")
    assert event["mta_queue_id"]  # Postfix gave the message a queue id before DATA ended
    assert events(milter, "injection") == []


def test_policy_verdicts_are_recorded_with_what_was_known(tmp_path, capture):
    milter = RunningMilter(tmp_path)
    milter.write_policy(
        "gate.py",
        "def validate_rcptto(ctx):\n"
        "    if ctx.recipient.startswith('blocked'):\n"
        "        ctx.reject('recipient blocked by site policy')\n"
        "def validate_data_spool_each_rcpt(ctx):\n"
        "    if ctx.recipient.startswith('later'):\n"
        "        ctx.tempfail('try again tomorrow', '450', '4.7.1')\n",
    )
    message = corpus.wrap_html(HTML, "8bit", TRACKED)
    with milter, mta(milter, capture) as postfix:
        at_rcpt = refused(postfix.smtp_port, message, "blocked@example.org")
        at_end = refused(postfix.smtp_port, message, "later@example.org")
        found = {e["rcpt_to"]: e for e in events(milter, "policy_rejection")}
    assert at_rcpt[0] == 550 and at_end[0] == 450
    blocked, later = found["blocked@example.org"], found["later@example.org"]
    assert blocked["raw_reason"] == reply_line(at_rcpt)
    assert blocked["raw_reason"].startswith("550 5.7.1 recipient blocked by site policy")
    assert later["raw_reason"] == reply_line(at_end) == "450 4.7.1 try again tomorrow"
    # The header had parsed when the end-of-message policy refused: its campaign is known.
    assert (later["campaign_id"], later["rcpt_tags"], later["rcpt_meta"]) == (
        "spring",
        ["t1"],
        {"k": "v"},
    )
    assert later["error_code"] == "450" and later["mta_queue_id"]


def test_deferred_recipient_is_recorded(tmp_path, capture):
    message = corpus.wrap_html(HTML, "8bit", TRACKED)
    defer = RunningMilter(tmp_path, smtpapi={"multi_recipient": "defer"})
    with defer as milter, mta(milter, capture) as postfix:
        refused_rcpts = send(postfix.smtp_port, message, ["a@example.org", "b@example.org"])
        assert refused_rcpts["b@example.org"][0] == 452
        (event,) = events(milter, "policy_rejection")
    assert event["rcpt_to"] == "b@example.org"
    assert event["raw_reason"].startswith("452 4.5.3 ")
    assert event["error_code"] == "452"


def test_a_store_that_is_down_never_turns_a_refusal_into_an_accept(tmp_path, capture):
    milter = RunningMilter(tmp_path, events={"store": "postgresql://127.0.0.1:1/events"})
    message = corpus.wrap_html(HTML, "8bit", b"X-MSYS-API: {not json")
    with milter, mta(milter, capture) as postfix:
        error = refused(postfix.smtp_port, message, "jane@example.org")
        milter.wait_for_log("policy_rejection not recorded: event store unavailable")
    assert reply_line(error).startswith("550 5.6.0 X-MSYS-API is not valid JSON")
    assert capture.messages == []


def test_a_refused_message_records_one_rejection_per_recipient(tmp_path, capture):
    reinject_port = free_port()
    milter = RunningMilter(
        tmp_path, smtpapi={"multi_recipient": "split", "reinject_to": f"127.0.0.1:{reinject_port}"}
    )
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    message = corpus.wrap_html(HTML, "8bit", b"X-MSYS-API: {}\r\nX-MSYS-API: {}")
    rcpts = ["one@example.org", "Two@Example.org"]
    with milter, mta(milter, capture, extra_master_cf=listener) as postfix:
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(postfix.smtp_port, message, rcpts)
        found = events(milter, "policy_rejection")
    reply = reply_line((info.value.smtp_code, info.value.smtp_error))
    assert reply == "550 5.6.0 message has more than one X-MSYS-API header"
    assert [(e["raw_rcpt_to"], e["raw_reason"]) for e in found] == [(r, reply) for r in rcpts]
    assert len({e["event_id"] for e in found}) == 2 and capture.messages == []
