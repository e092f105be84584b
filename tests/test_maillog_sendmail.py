"""The Sendmail parser on real line shapes, quoted from public sources: Sendmail 8.14 logs in
public bug reports, how-tos and log-analysis projects (each test says which)."""

from __future__ import annotations

import pytest

from smtpapi_milter.maillog.lines import parse_syslog
from smtpapi_milter.maillog.outcome import MessageExpired
from smtpapi_milter.maillog.sendmail import SendmailParser

NOW = 1_796_000_000.0


def parse(*raw: str) -> list:
    parser = SendmailParser()
    found = []
    for text in raw:
        line = parse_syslog(text, NOW)
        assert line is not None, text
        found += parser.feed_all(line)
    return found


def test_sent_with_a_remote_reply():
    # A how-to's sample of /var/log/mail.log (Sendmail on a Debian VPS).
    (outcome,) = parse(
        "Jul 19 13:28:36 vs184010 sm-mta[11383]: m6JDSZoG011380: to=<mail@wzuup.com>, "
        "delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120553, "
        "relay=gmail-smtp-in.l.google.com. [209.85.129.27], dsn=2.0.0, stat=Sent (OK "
        "1216474116 13si6851157fks.6)"
    )
    assert outcome.kind == "delivery"
    assert (outcome.queue_id, outcome.recipient) == ("m6JDSZoG011380", "mail@wzuup.com")
    assert (outcome.relay_host, outcome.relay_ip) == ("gmail-smtp-in.l.google.com", "209.85.129.27")
    assert outcome.reply == "OK 1216474116 13si6851157fks.6"
    assert (outcome.delv_method, outcome.queue_seconds, outcome.tls) == ("esmtp", 1, False)


def test_deferred_keeps_the_remote_reply_and_its_code():
    # From a public question about a sender domain check (Sendmail 8.14.4).
    (outcome,) = parse(
        "Apr 10 08:47:25 andrejs sm-mta[593]: r39G922P001173: to=<v**e@inbox.lv>, "
        "ctladdr=<www-data@andrejs.domain.lt> (33/33), delay=20:38:23, xdelay=00:00:00, "
        "mailer=esmtp, pri=11550899, relay=b.mx.inbox.lv. [89.111.3.74], dsn=4.1.8, "
        "stat=Deferred: 450 4.1.8 <www-data@andrejs.domain.lt>: Sender address rejected: "
        "Domain not found"
    )
    assert outcome.kind == "delay"
    assert outcome.reply.startswith("450 4.1.8 <www-data@andrejs.domain.lt>: Sender address")
    assert (outcome.code, outcome.enhanced) == ("450", "4.1.8")
    assert outcome.queue_seconds == 20 * 3600 + 38 * 60 + 23


def test_bounce_and_its_dsn_notice():
    # A public CentOS how-to; dsn and stat without a space between them, as it logged.
    found = parse(
        "Jun 26 07:24:25 MyVPS1976 sendmail[31762]: q5PNOMeP031760: to=<admin@centos.bz>, "
        "ctladdr=<www@MyVPS1976> (501/501), delay=00:00:02, xdelay=00:00:02, mailer=esmtp, "
        "pri=121393, relay=mxdomain.qq.com. [64.71.138.90], dsn=5.0.0,stat=Service unavailable",
        "Jun 26 07:24:25 MyVPS1976 sendmail[31762]: q5PNOMeP031760: q5PNOPeP031762: DSN: "
        "Service unavailable",
        "Jun 26 07:24:25 MyVPS1976 sendmail[31762]: q5PNOPeP031762: to=root, delay=00:00:00, "
        "xdelay=00:00:00, mailer=local, pri=30000, dsn=2.0.0, stat=Sent",
    )
    (outcome,) = found  # the DSN's own delivery to root is not an outcome
    assert (outcome.kind, outcome.reply, outcome.code) == ("bounce", "Service unavailable", "")


def test_a_temporary_failure_without_deferred_is_a_delay():
    (outcome,) = parse(
        "Dec  6 19:19:22 cutiebunny sm-mta[13125]: mB72JLu5013099: to=benloc@sipnsearch.com, "
        "delay=00:56:51, xdelay=00:00:01, mailer=esmtp, pri=570000, "
        "relay=smtp-in-2.userservices.net. [204.16.46.1], dsn=4.5.0, stat=Operating system error"
    )
    assert (outcome.kind, outcome.recipient) == ("delay", "benloc@sipnsearch.com")


def test_one_line_for_several_recipients_and_local_delivery():
    found = parse(
        "Oct 14 18:04:42 contspmail01 sendmail[1132]: x9EL4Kck001075: "
        "to=<ricardo@contmatic.com.br>,<ana@contmatic.com.br>, delay=00:00:02, "
        "xdelay=00:00:02, mailer=local, pri=195426, dsn=2.0.0, stat=Sent"
    )
    assert [(o.recipient, o.delv_method, o.relay_ip) for o in found] == [
        ("ricardo@contmatic.com.br", "local", ""),
        ("ana@contmatic.com.br", "local", ""),
    ]
    assert found[0].tls is None


def test_starttls_from_the_same_process_is_outbound_tls():
    # A public log excerpt of a Brazilian ISP's relay (STARTTLS=client line, then delivery).
    found = parse(
        "Oct 14 18:04:40 contspmail01 sendmail[1131]: STARTTLS=client, "
        "relay=mx.core.locaweb.com.br., version=TLSv1/SSLv3, verify=FAIL, "
        "cipher=DHE-RSA-AES256-SHA, bits=256/256",
        "Oct 14 18:04:40 contspmail01 sendmail[1131]: x9EL4XLo001111: "
        "to=<francine.campos@starsonic.com.br>, ctladdr=<crislene.maia@contmatic.com.br> "
        "(960/100), delay=00:00:05, xdelay=00:00:01, mailer=esmtp, pri=402603, "
        "relay=mx.core.locaweb.com.br. [177.153.23.241], dsn=2.0.0, stat=Sent (Ok: queued "
        "as 46sWK42Z5gz1F)",
    )
    assert [o.tls for o in found] == [True]


@pytest.mark.parametrize("days", ["5 days", "4 hours"])
def test_cannot_send_message_for_days_is_an_expiry(days):
    (expired,) = parse(
        "Mar  1 10:00:00 mx sm-mta[2001]: r39G922P001173: r3A1B2C3001174: DSN: Cannot send "
        f"message for {days}"
    )
    assert isinstance(expired, MessageExpired) and expired.queue_id == "r39G922P001173"


def test_user_unknown_as_sendmail_words_it():
    (outcome,) = parse(
        "Mar  1 10:00:00 mx sm-mta[2002]: 0B4FoQ1a001234: to=<nobody@example.org>, "
        "delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120345, "
        "relay=mx.example.org. [192.0.2.1], dsn=5.1.1, stat=User unknown"
    )
    assert (outcome.kind, outcome.enhanced, outcome.reply) == ("bounce", "5.1.1", "User unknown")


def test_a_delay_warning_to_the_sender_is_not_an_expiry():
    assert not parse(
        "Mar  1 10:00:00 mx sm-mta[2001]: r39G922P001173: r3A1B2C3001175: DSN: Warning: "
        "could not send message for past 4 hours"
    )


# Logged by the real Sendmail 8.17.1.9 of tests/test_maillog_sendmail_e2e.py (relay mailer,
# a test MX answering 452 4.2.2 and 550 5.1.1): reply= carries the remote's reply.
OURS_DEFERRED = (
    "Dec  4 16:01:12 mta.test sendmail[36]: 6B4G1CPL000034: to=<full@example.org>, "
    "delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=30302, relay=[127.0.0.1] [127.0.0.1], "
    "dsn=4.3.1, reply=452 4.2.2 <full@example.org>: Mailbox full, stat=Deferred: 452 4.2.2 "
    "<full@example.org>: Mailbox full"
)
OURS_BOUNCED = (
    "Dec  4 16:01:12 mta.test sendmail[39]: 6B4G1CeI000037: to=<unknown@example.org>, "
    "delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=30308, relay=[127.0.0.1] [127.0.0.1], "
    "dsn=5.1.1, reply=550 5.1.1 <unknown@example.org>: Recipient address rejected: User "
    "unknown, stat=User unknown"
)


def test_sendmail_817_reply_field_gives_the_remote_reply_and_code():
    delay, bounce = parse(OURS_DEFERRED, OURS_BOUNCED)
    assert (delay.kind, delay.code, delay.enhanced) == ("delay", "452", "4.2.2")
    assert delay.reply == "452 4.2.2 <full@example.org>: Mailbox full"
    assert (delay.relay_ip, delay.delv_method) == ("127.0.0.1", "esmtp")
    assert (bounce.kind, bounce.code, bounce.enhanced) == ("bounce", "550", "5.1.1")
    assert bounce.reply.endswith("Recipient address rejected: User unknown")
