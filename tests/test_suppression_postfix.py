"""The milter enforces the suppression list, through a real private Postfix (SPEC 14).

Entries are added and removed with the operator's command (``smtpapi-milter suppression``),
events read back with ``smtpapi-milter events``; what arrives is what Postfix delivered to
the capture server. ``cache_seconds = 0`` so a change shows in the very next message (the
cache itself: tests/test_suppression_cache.py).
"""

from __future__ import annotations

import smtplib
import subprocess
import sys

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.ports import free_port
from smtpapi_milter.sandbox.postfix import PrivatePostfix

from . import corpus
from .harness.smtpapi import ROOT, RunningMilter
from .test_milter_postfix_events import HTML, events, refused, reply_line, send

NEWSLETTER = b'X-MSYS-API: {"campaign_id": "weekly", "options": {"open_tracking": true}}'
TRANSACTIONAL = (
    b'X-MSYS-API: {"campaign_id": "receipts",'
    b' "options": {"open_tracking": true, "transactional": true}}'
)
GONE, STAYS = "Gone@Example.org", "stays@example.org"


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def enforcing(tmp_path, **smtpapi) -> RunningMilter:
    return RunningMilter(tmp_path, suppression={"cache_seconds": 0}, smtpapi=smtpapi)


def suppression(milter: RunningMilter, *args: str) -> str:
    """``smtpapi-milter suppression ARGS`` as an operator runs it; its output."""
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "suppression", *args]
    argv += ["--config", str(milter.config_path)]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout


def mta(milter: RunningMilter, capture: CaptureServer, **kwargs) -> PrivatePostfix:
    return PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port, **kwargs)


def delivered_to(capture: CaptureServer, count: int) -> list[list[str]]:
    return sorted(sorted(m.rcpt_tos) for m in capture.wait_for(count, timeout=30))


def first_mail(postfix: PrivatePostfix, capture: CaptureServer) -> None:
    """One message through, so the milter has made its store (the suppression command adds
    to an existing store only) and nothing is suppressed yet."""
    assert send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", NEWSLETTER), [STAYS]) == {}
    capture.wait_for(1, timeout=30)
    capture.clear()


def test_suppressed_recipient_is_removed_the_other_gets_the_newsletter(tmp_path, capture):
    newsletter = corpus.wrap_html(HTML, "8bit", NEWSLETTER)
    with enforcing(tmp_path) as milter, mta(milter, capture) as postfix:
        assert send(postfix.smtp_port, newsletter, [GONE, STAYS]) == {}
        assert delivered_to(capture, 1) == [sorted([GONE, STAYS])]
        capture.clear()
        suppression(milter, "add", GONE.lower(), "--description", "asked by phone")
        assert send(postfix.smtp_port, newsletter, [GONE, STAYS]) == {}
        assert delivered_to(capture, 1) == [[STAYS]]
        (rejected,) = events(milter, "policy_rejection")
        injected = events(milter, "injection")[-1]
        # Removed, the same recipient is a newsletter reader again.
        suppression(milter, "remove", GONE)
        capture.clear()
        assert send(postfix.smtp_port, newsletter, [GONE, STAYS]) == {}
        assert delivered_to(capture, 1) == [sorted([GONE, STAYS])]
        assert len(events(milter, "policy_rejection")) == 1
    assert (rejected["raw_rcpt_to"], rejected["rcpt_to"]) == (GONE, GONE.lower())
    assert rejected["raw_reason"] == "550 5.7.1 recipient is on the suppression list (manual)"
    assert (rejected["bounce_class"], rejected["campaign_id"]) == ("25", "weekly")
    assert rejected["mta_queue_id"] == injected["mta_queue_id"] != ""
    assert injected["rcpt_to"] == ""  # shared: one body for the rest, no recipient named


def test_suppressed_recipient_still_gets_transactional_mail(tmp_path, capture):
    receipt = corpus.wrap_html(HTML, "8bit", TRANSACTIONAL)
    with enforcing(tmp_path) as milter, mta(milter, capture) as postfix:
        first_mail(postfix, capture)
        suppression(milter, "add", GONE)
        assert send(postfix.smtp_port, receipt, [GONE]) == {}
        assert delivered_to(capture, 1) == [[GONE]]
        # A transactional entry blocks transactional mail (and only that), as SparkPost's.
        suppression(milter, "add", GONE, "--type", "transactional")
        error = refused(postfix.smtp_port, receipt, GONE)
        assert events(milter, "policy_rejection")[0]["raw_reason"] == reply_line(error)
    assert reply_line(error).startswith("550 5.7.1 recipient is on the suppression list")


def test_every_recipient_suppressed_refuses_the_message(tmp_path, capture):
    newsletter = corpus.wrap_html(HTML, "8bit", NEWSLETTER)
    with enforcing(tmp_path) as milter, mta(milter, capture) as postfix:
        first_mail(postfix, capture)
        suppression(milter, "add", GONE)
        error = refused(postfix.smtp_port, newsletter, GONE)
        (rejected,) = events(milter, "policy_rejection")
        assert len(events(milter, "injection")) == 1  # first_mail's
    assert reply_line(error) == "550 5.7.1 recipient is on the suppression list (manual)"
    assert rejected["raw_reason"] == reply_line(error) and capture.messages == []


def test_split_mode_reinjects_no_copy_for_a_suppressed_recipient(tmp_path, capture):
    reinject_port = free_port()
    milter = enforcing(tmp_path, multi_recipient="split", reinject_to=f"127.0.0.1:{reinject_port}")
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    newsletter = corpus.wrap_html(HTML, "8bit", NEWSLETTER)
    # The first recipient, whose copy would stay in the client's transaction, is the one gone.
    rcpts = [GONE, "one@example.org", "two@example.org"]
    with milter, mta(milter, capture, extra_master_cf=listener) as postfix:
        first_mail(postfix, capture)
        suppression(milter, "add", GONE)
        assert send(postfix.smtp_port, newsletter, rcpts) == {}
        assert delivered_to(capture, 2) == [["one@example.org"], ["two@example.org"]]
        injections = events(milter, "injection")
        (rejected,) = events(milter, "policy_rejection")
    assert sorted(e["rcpt_to"] for e in injections) == [
        "one@example.org",
        STAYS,
        "two@example.org",
    ]
    assert all(e["mta_queue_id"] for e in injections) and rejected["raw_rcpt_to"] == GONE
    assert len(capture.messages) == 2


def test_a_list_that_cannot_be_read_tempfails_even_untracked_mail(tmp_path, capture):
    # Untracked mail needs no injection event, so before the list existed it went out with
    # the store down; now it might go to someone who unsubscribed: the client retries later.
    milter = RunningMilter(tmp_path, events={"store": "postgresql://127.0.0.1:1/events"})
    plain = b"From: news@example.com\r\nTo: jane@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    with milter, mta(milter, capture) as postfix, pytest.raises(smtplib.SMTPDataError) as info:
        send(postfix.smtp_port, plain, ["jane@example.org"])
    assert reply_line((info.value.smtp_code, info.value.smtp_error)) == (
        "451 4.3.0 event store unavailable, try again later"
    )
    assert capture.messages == []


def test_failing_open_after_an_error_still_leaves_suppressed_recipients_out(tmp_path, capture):
    # on_error = "accept": a broken policy sends the message out as it came, but not to
    # someone on the list (checked as non-transactional mail: its settings were never read).
    milter = RunningMilter(
        tmp_path, suppression={"cache_seconds": 0}, milter={"on_error": "accept"}
    )
    newsletter = corpus.wrap_html(HTML, "8bit", NEWSLETTER)
    with milter, mta(milter, capture) as postfix:
        first_mail(postfix, capture)
        suppression(milter, "add", GONE)
        milter.write_policy("broken.py", "def validate_data_spool(ctx):\n    1 / 0\n")
        milter.reload()
        milter.wait_for_log("reloaded")
        assert send(postfix.smtp_port, newsletter, [GONE, STAYS]) == {}
        assert delivered_to(capture, 1) == [[STAYS]]
        (rejected,) = events(milter, "policy_rejection")
        error = refused(postfix.smtp_port, newsletter, GONE)
    assert rejected["raw_rcpt_to"] == GONE
    assert reply_line(error) == "550 5.7.1 recipient is on the suppression list (manual)"


def test_local_submission_leaves_suppressed_recipients_out(tmp_path, capture):
    # Postfix's sendmail command: the milter sees the mail in cleanup (non_smtpd_milters);
    # the split / shared decision for it is multi_recipient's as for SMTP (shared here).
    milter = enforcing(tmp_path)
    local = PrivatePostfix(non_smtpd_milters=milter.socket, relay_port=capture.port)
    newsletter = corpus.wrap_html(HTML, "8bit", NEWSLETTER)
    with milter, local as postfix:
        postfix.submit(newsletter, "news@example.com", [STAYS])
        capture.wait_for(1, timeout=30)
        capture.clear()
        suppression(milter, "add", GONE)
        postfix.submit(newsletter, "news@example.com", [GONE, STAYS])
        assert delivered_to(capture, 1) == [[STAYS]]
        assert events(milter, "policy_rejection")[0]["raw_rcpt_to"] == GONE
        capture.clear()
        postfix.submit(newsletter, "news@example.com", [GONE])
        (bounce,) = capture.wait_for(1, timeout=30)
    # Nobody left: the mail was already queued when cleanup asked the milter, so Postfix
    # returns it to the local sender with the reason, never drops it silently.
    assert bounce.rcpt_tos == ("news@example.com",)
    assert b"<Gone@Example.org>: recipient is on the suppression list (manual)" in bounce.data
