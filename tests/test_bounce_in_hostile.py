"""bounce-in against hostile and odd reports (review of issue 18): whatever a report looks
like, classifying it never raises (an exception is exit 75, and the MTA would retry the same
report for days), and what it says is attributed to the address we sent to."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.bounces_in.classify import classify
from smtpapi_milter.bounces_in.events import build_events
from smtpapi_milter.bounces_in.return_path import ReturnPathToken
from smtpapi_milter.config import ConfigError, parse_config
from smtpapi_milter.delivery.bounce_class import BounceClassifier

CLASSIFIER = BounceClassifier.load()


def test_non_ascii_bytes_in_header_fields_are_read_not_fatal():
    """8-bit bytes in From or Subject (seen from broken mailers) make the email package hand
    back Header objects instead of strings: once a TypeError, exit 75, retried for days."""
    raw = (
        b"From: \xff\xfe MAILER-DAEMON@mx.example\r\nSubject: \xe9chec: Undeliverable\r\n"
        b"Content-Type: text/plain\r\n\r\n<gone@b.example>: 550 5.1.1 user unknown\r\n"
    )
    report = classify(raw, CLASSIFIER)
    assert report.kind == "bounce"
    assert [(f.recipient, f.bounce_class) for f in report.failures] == [("gone@b.example", 10)]
    vacation = b"From: Jos\xe9 <jose@x.example>\r\nSubject: Abwesenheit \xfc\r\n\r\nweg\r\n"
    assert classify(vacation, CLASSIFIER).kind == "auto_reply"
    arf = (
        b"From: \xe9 <fbl@isp.example>\r\nTo: fbl@bounces.example.com\r\n"
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        b"\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nTo: \xe9 <jane@example.org>\r\n"
        b"\r\n--b--\r\n"
    )
    report = classify(arf, CLASSIFIER)
    assert (report.kind, report.report_by, report.complained_about) == (
        "arf",
        "isp.example",
        "jane@example.org",
    )


HEADER_PIECES = [
    b"From: ",
    b"To: ",
    b"Subject: ",
    b"Auto-Submitted: ",
    b"X-Failed-Recipients: ",
    b"Precedence: ",
    b"MAILER-DAEMON@mx.example",
    b"<gone@b.example>",
    b"\r\n",
    b"\r\n\r\n550 5.1.1 <gone@b.example> user unknown\r\n",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HEADER_PIECES) | st.binary(max_size=12), max_size=25))
def test_any_bytes_in_any_header_never_fail_the_classifier(pieces):
    """8-bit bytes anywhere in the header fields the classifier reads (the generated texts of
    test_bounce_in are UTF-8, which the email package takes as strings)."""
    report = classify(b"".join(pieces), CLASSIFIER)
    assert report.kind in ("dsn", "arf", "bounce", "auto_reply", "unknown")


def test_deeply_nested_parts_are_classified_not_fatal():
    """Thousands of nested multiparts in the first MiB: the email package recurses once per
    level, and the RecursionError was exit 75 (retried for days). The report is read from
    its header fields alone instead."""
    nesting = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(5000)
    )
    raw = b"From: MAILER-DAEMON@mx.example\r\nSubject: Undeliverable\r\n" + nesting
    raw += b"\r\n<gone@b.example>: 550 5.1.1 user unknown\r\n"
    report = classify(raw, CLASSIFIER)
    assert report.kind in ("bounce", "unknown")
    assert report.texts[0].startswith("From: MAILER-DAEMON")  # the token is still searched


def dsn(*blocks: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n" + "\r\n".join(blocks) + "\r\n--b--\r\n"
    ).encode()


def test_the_original_recipient_is_the_one_we_sent_to():
    """A receiving site that forwards (an alias to another mailbox) names the mailbox it
    failed at as Final-Recipient; Original-Recipient is the ORCPT our MTA sent (RFC 3464
    2.3.1), the address the copy went to. A shared body's event and suppression take the
    recipient from the report: the forwarded-to address was never one of ours."""
    raw = dsn(
        "Original-Recipient: rfc822; jane@example.org\r\n"
        "Final-Recipient: rfc822; jane.doe@forward.example\r\nAction: failed\r\n"
        "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
    )
    report = classify(raw, CLASSIFIER)
    assert [f.recipient for f in report.failures] == ["jane@example.org"]
    (event,) = build_events(report, ReturnPathToken("1", 0, True), None, 0, "k")
    assert event["rcpt_to"] == "jane@example.org"
    # An Original-Recipient that names no address (a non-rfc822 type, "unknown") is skipped.
    raw = dsn(
        "Original-Recipient: x-local; unknown\r\n"
        "Final-Recipient: rfc822; jane@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    )
    assert [f.recipient for f in classify(raw, CLASSIFIER).failures] == ["jane@example.org"]


def test_a_recipient_block_without_action_is_read_from_its_status():
    """RFC 3464 requires Action, but a block that has none and a 5.x.x Status is a failure
    (4.x.x a delay): it was dropped, exit 0, the event lost. One with neither stays out."""
    raw = dsn(
        "Final-Recipient: rfc822; gone@example.org\r\nStatus: 5.1.1\r\n",
        "Final-Recipient: rfc822; later@example.org\r\nStatus: 4.4.1\r\n",
        "Final-Recipient: rfc822; fine@example.org\r\nStatus: 2.0.0\r\n",
    )
    report = classify(raw, CLASSIFIER)
    assert report.kind == "dsn"
    assert [(f.recipient, f.action, f.bounce_class) for f in report.failures] == [
        ("gone@example.org", "failed", 10),
        ("later@example.org", "delayed", 24),  # 4.4.1: the delivery rules say timeout
    ]


@pytest.mark.parametrize("domain", ["192.0.2.1", "1.2.3.4", "bounces.123"])
def test_an_ip_address_is_not_a_bounce_domain(domain):
    """bounce-x@192.0.2.1 is no valid envelope sender (RFC 5321 wants [192.0.2.1]) and has no
    MX record: refused naming file, key and value, as "exa mple.com" and "@x" are."""
    with pytest.raises(ConfigError, match=rf"f.toml: 'smtpapi.bounce_domain' '{domain}'"):
        parse_config({"smtpapi": {"bounce_domain": domain}}, "f.toml")
    parse_config({"smtpapi": {"bounce_domain": "b123.example"}}, "f.toml")
