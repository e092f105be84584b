"""The Postfix parser on real line shapes: what the private test Postfix logged here, and
lines quoted in public log-analysis projects and Postfix's own source (see each)."""

from __future__ import annotations

import pytest

from smtpapi_milter.maillog.lines import parse_syslog
from smtpapi_milter.maillog.outcome import MessageExpired, Outcome
from smtpapi_milter.maillog.postfix import PostfixParser

NOW = 1_796_000_000.0  # late 2026: the lines' year-less stamps are read as 2026's

# Logged by the private Postfix 3.7.11 of tests/harness (maillog_file via postlogd).
OURS_SENT = (
    "Dec 04 15:39:09 mta postfix-smtpapi-postfix-5e1s74rj/smtp[10655]: 0CF9720C347: "
    "to=<b@example.org>, relay=127.0.0.1[127.0.0.1]:42205, delay=0.05, "
    "delays=0.04/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 OK: captured)"
)


def parse(*raw: str) -> list[Outcome | MessageExpired]:
    parser = PostfixParser()
    found = []
    for text in raw:
        line = parse_syslog(text, NOW)
        assert line is not None, text
        item = parser.feed(line)
        if item is not None:
            found.append(item)
    return found


def test_sent_by_our_private_postfix():
    (outcome,) = parse(OURS_SENT)
    assert outcome.kind == "delivery"
    assert (outcome.queue_id, outcome.recipient, outcome.original) == (
        "0CF9720C347",
        "b@example.org",
        "",
    )
    assert (outcome.relay_host, outcome.relay_ip) == ("127.0.0.1", "127.0.0.1")
    assert (outcome.code, outcome.enhanced, outcome.reply) == (
        "250",
        "2.0.0",
        "250 2.0.0 OK: captured",
    )
    assert outcome.queue_seconds == pytest.approx(0.05)
    assert outcome.delv_method == "esmtp" and outcome.tls is False
    assert outcome.routing_domain == "example.org"


def test_bounced_reply_is_the_remote_servers_without_postfix_wrapping():
    (outcome,) = parse(
        "Mar  3 10:00:01 mx1 postfix/smtp[4242]: 4QnR7z0vX2z9rxN: to=<nobody@example.com>, "
        "orig_to=<Nobody@Example.com>, relay=mx.example.com[192.0.2.1]:25, delay=1.4, "
        "delays=0.1/0/0.6/0.7, dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1] "
        "said: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in "
        "virtual mailbox table (in reply to RCPT TO command))"
    )
    assert outcome.kind == "bounce"
    assert outcome.original == "Nobody@Example.com"
    assert outcome.reply == (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual "
        "mailbox table"
    )
    assert (outcome.code, outcome.enhanced, outcome.relay_ip) == ("550", "5.1.1", "192.0.2.1")


def test_deferred_without_a_reply_has_no_code():
    # github.com/onlyjob/... style line, quoted in a public Go log parser's tests.
    (outcome,) = parse(
        "Dec 27 03:49:24 mx postfix/smtp[15816]: C93CEB08A046: to=<order@arobor.ru>, "
        "relay=none, delay=307136, delays=307106/0.02/30/0, dsn=4.4.1, status=deferred "
        "(connect to arobor.ru[178.210.73.19]:25: Connection timed out)"
    )
    assert outcome.kind == "delay"
    assert outcome.reply == "connect to arobor.ru[178.210.73.19]:25: Connection timed out"
    assert (outcome.code, outcome.enhanced, outcome.relay_ip, outcome.tls) == (
        "",
        "4.4.1",
        "",
        None,
    )
    assert outcome.queue_seconds == 307136


def test_qmgr_expiry_and_the_notice_to_the_sender_are_not_deliveries():
    found = parse(
        "Dec 28 13:39:28 mx postfix/qmgr[22753]: C93CEB08A046: from=<ina@somedomain.com>, "
        "status=expired, returned to sender",
        "Dec 28 13:39:28 mx postfix/cleanup[19210]: B1B894562003: "
        "message-id=<20151228103928.B1B894562003@mx.somedomain.com>",
        "Dec 28 13:39:28 mx postfix/bounce[19155]: C93CEB08A046: sender non-delivery "
        "notification: B1B894562003",
        "Dec 28 13:39:28 mx postfix/qmgr[22753]: B1B894562003: from=<>, size=3773, nrcpt=1 "
        "(queue active)",
        "Dec 28 13:39:29 mx postfix/smtp[19211]: B1B894562003: to=<ina@somedomain.com>, "
        "relay=mx.somedomain.com[198.51.100.4]:25, delay=0.9, delays=0/0/0.4/0.5, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 77F1A2)",
    )
    (expired,) = found
    assert isinstance(expired, MessageExpired)
    assert (expired.queue_id, expired.sender) == ("C93CEB08A046", "ina@somedomain.com")


def test_per_recipient_expiry_is_a_bounce():
    (outcome,) = parse(
        "Oct 10 13:22:49 host postfix/error[1707]: A323688C523: to=<d76@example.test>, "
        "relay=none, delay=432000, delays=432000/0/0/0, dsn=4.4.1, status=expired, returned "
        "to sender"
    )
    assert (outcome.kind, outcome.enhanced, outcome.delv_method) == ("bounce", "4.4.1", "error")


@pytest.mark.parametrize(
    ("raw", "method", "reply"),
    [
        (
            "Jan 10 08:00:00 box postfix/lmtp[2345]: 7A1B2C3D4E: to=<user@example.com>, "
            "relay=mail.example.com[private/dovecot-lmtp], delay=0.05, "
            "delays=0.01/0.01/0.01/0.02, dsn=2.0.0, status=sent (250 2.0.0 <user@example.com> "
            "8Jx2BfJ+aGVwMAAA0J78UA Saved)",
            "lmtp",
            "250 2.0.0 <user@example.com> 8Jx2BfJ+aGVwMAAA0J78UA Saved",
        ),
        (
            "Jan 10 08:00:00 box postfix/local[3456]: 1A2B3C4D5E: to=<root@box.example.com>, "
            "orig_to=<root>, relay=local, delay=0.03, delays=0.01/0.01/0/0.01, dsn=2.0.0, "
            "status=sent (delivered to mailbox)",
            "local",
            "delivered to mailbox",
        ),
        (
            "Jan 10 08:00:00 box postfix/virtual[4567]: 2B3C4D5E6F: to=<info@example.net>, "
            "relay=virtual, delay=0.1, delays=0.05/0.01/0/0.04, dsn=2.0.0, status=sent "
            "(delivered to maildir)",
            "virtual",
            "delivered to maildir",
        ),
        (
            "Jan 10 08:00:00 box postfix/pipe[5678]: 3C4D5E6F7A: to=<user@example.com>, "
            "relay=dovecot, delay=0.2, delays=0.1/0.01/0/0.09, dsn=2.0.0, status=sent "
            "(delivered via dovecot service)",
            "pipe",
            "delivered via dovecot service",
        ),
    ],
)
def test_other_delivery_agents(raw, method, reply):
    (outcome,) = parse(raw)
    assert (outcome.kind, outcome.delv_method, outcome.reply) == ("delivery", method, reply)


TLS = (
    "Jan 10 08:00:00 mx postfix/smtp[12345]: Trusted TLS connection established to "
    "gmail-smtp-in.l.google.com[142.250.27.26]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
    "(256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256"
)


def gmail(pid: int, reuse: str = "") -> str:
    return (
        f"Jan 10 08:00:01 mx postfix/smtp[{pid}]: 5D6E7F8A9B: to=<x@gmail.com>, "
        f"relay=gmail-smtp-in.l.google.com[142.250.27.26]:25, {reuse}delay=1.1, "
        "delays=0.1/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK  1736496001 "
        "a640c23a62f3a-aab9 - gsmtp)"
    )


def test_tls_is_known_from_the_same_process_or_a_reused_connection():
    assert [o.tls for o in parse(TLS, gmail(12345))] == [True]
    assert [o.tls for o in parse(TLS, gmail(999))] == [False]
    assert [o.tls for o in parse(TLS, gmail(12345), gmail(777, "conn_use=2, "))] == [True, True]


def test_address_verification_probes_and_other_lines_give_nothing():
    assert not parse(
        "Jan 10 08:00:00 mx postfix/smtp[1]: 6E7F8A9B0C: to=<probe@example.com>, "
        "relay=mx.example.com[192.0.2.1]:25, delay=0.3, delays=0/0/0.1/0.2, dsn=2.1.5, "
        "status=deliverable (250 2.1.5 Ok)",
        "Jan 10 08:00:00 mx postfix/smtpd[2]: connect from localhost[127.0.0.1]",
        "Jan 10 08:00:00 mx postfix/qmgr[3]: 6E7F8A9B0C: removed",
    )


def test_rfc3339_stamps_as_rsyslog_writes_them():
    line = parse_syslog(
        "2026-12-04T15:39:09.123456+00:00 mta postfix/smtp[10655]: 0CF9720C347: removed"
    )
    assert line is not None and line.time == pytest.approx(1796398749.123456)
    assert (line.tag, line.pid) == ("postfix/smtp", "10655")
