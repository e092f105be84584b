"""Postfix log lines in the shapes Postfix 3.7 writes them, for the follower's tests and
benchmark. The shapes are copied from what the private test Postfix logged here
(maillog_file, postlogd) and from Postfix's source (smtp/lmtp delivery, qmgr expiry,
bounce notices); the values are made up."""

from __future__ import annotations

import time

HOST = "mta"
TAG = "postfix"


def stamp(when: float) -> str:
    """postlogd's (and syslog's) time stamp: ``Dec 04 15:39:09``, local time."""
    return time.strftime("%b %d %H:%M:%S", time.localtime(when))


def line(when: float, agent: str, pid: int, text: str, tag: str = TAG) -> str:
    return f"{stamp(when)} {HOST} {tag}/{agent}[{pid}]: {text}"


def received(when: float, qid: str, sender: str, rcpt_count: int = 1) -> list[str]:
    """The lines before a delivery: smtpd, cleanup, qmgr."""
    return [
        line(when, "smtpd", 10650, f"{qid}: client=localhost[127.0.0.1]"),
        line(when, "cleanup", 10654, f"{qid}: message-id=<{qid}@mta.test>"),
        line(
            when,
            "qmgr",
            10648,
            f"{qid}: from=<{sender}>, size=2981, nrcpt={rcpt_count} (queue active)",
        ),
    ]


def sent(when: float, qid: str, rcpt: str, pid: int = 10655, orig: str = "") -> str:
    orig_to = f"orig_to=<{orig}>, " if orig else ""
    return line(
        when,
        "smtp",
        pid,
        f"{qid}: to=<{rcpt}>, {orig_to}relay=mx.example.org[192.0.2.25]:25, delay=0.62, "
        "delays=0.04/0.01/0.21/0.36, dsn=2.0.0, status=sent "
        "(250 2.0.0 Ok: queued as 4QnR7z0vX2z9rxN)",
    )


def deferred(when: float, qid: str, rcpt: str, pid: int = 10656) -> str:
    return line(
        when,
        "smtp",
        pid,
        f"{qid}: to=<{rcpt}>, relay=mx.example.org[192.0.2.25]:25, delay=1.3, "
        "delays=0.04/0/0.2/1, dsn=4.2.2, status=deferred (host mx.example.org[192.0.2.25] said: "
        f"452 4.2.2 <{rcpt}>: mailbox full (in reply to RCPT TO command))",
    )


def bounced(when: float, qid: str, rcpt: str, pid: int = 10657) -> str:
    return line(
        when,
        "smtp",
        pid,
        f"{qid}: to=<{rcpt}>, relay=mx.example.org[192.0.2.25]:25, delay=0.5, "
        "delays=0.04/0/0.2/0.26, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.25] "
        f"said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual "
        "mailbox table (in reply to RCPT TO command))",
    )


def removed(when: float, qid: str) -> str:
    return line(when, "qmgr", 10648, f"{qid}: removed")
