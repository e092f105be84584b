"""Delivery outcomes through the real Sendmail 8.17 (unpacked, in a private namespace, with
our milter), relaying to a test MX that answers per recipient: the follower reads Sendmail's
log (syslog() lines written to a file as rsyslog would) and records one delivery, one delay
and one bounce (class 10), each joined to its campaign and tags. Then the follower is
SIGKILLed, Sendmail logs more outcomes while it is down, its log is rotated as logrotate does
it (renamed; the next line makes a new file, as syslog reopens it on logrotate's SIGHUP), and
more arrive: after a restart every later outcome is recorded and none twice."""

from __future__ import annotations

import collections
import os

import pytest

from smtpapi_milter.events.store import open_store

from .harness import sendmail_maillog_driver
from .harness.smtpapi import RunningMaillog
from .test_maillog_postfix_e2e import message, outcomes, wait_until, with_queue_id

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unshare needs root")


def test_outcomes_through_sendmail(tmp_path):
    url = f"sqlite:///{tmp_path}/events.sqlite3"
    log = tmp_path / "mail.log"
    rcpts = ("ok@example.org", "full@example.org", "unknown@example.org")
    replies = sendmail_maillog_driver.run(
        tmp_path,
        log,
        url,
        [{"data": message(r, "winter"), "rcpts": [r], "from": "news@example.com"} for r in rcpts],
    )
    assert all(reply["accepted"] for reply in replies), replies
    store = open_store(url)
    (tmp_path / "follower").mkdir()
    follower = RunningMaillog(
        tmp_path / "follower",
        events={"store": url},
        maillog={"source": str(log), "format": "sendmail"},
    )
    try:
        for rcpt, reply in zip(rcpts, replies, strict=True):
            with_queue_id(store, rcpt, reply["queue_id"])
        follower.start()

        def outcomes() -> dict:
            return {e["rcpt_to"]: e for e in store.query(types=["delivery", "delay", "bounce"])}

        wait_until(lambda: len(outcomes()) == 3, what="three outcomes from Sendmail's log")
        found = outcomes()
        assert {rcpt: found[rcpt]["type"] for rcpt in rcpts} == {
            "ok@example.org": "delivery",
            "full@example.org": "delay",
            "unknown@example.org": "bounce",
        }
        for rcpt, reply in zip(rcpts, replies, strict=True):
            assert found[rcpt]["campaign_id"] == "winter"
            assert found[rcpt]["rcpt_tags"] == ["autumn", rcpt.split("@")[0]]
            assert found[rcpt]["mta_queue_id"] == reply["queue_id"]
        bounce = found["unknown@example.org"]
        assert bounce["bounce_class"] == "10", bounce
        assert found["full@example.org"]["bounce_class"] == "22", found["full@example.org"]
        assert found["ok@example.org"]["delv_method"] == "esmtp"
    finally:
        follower.stop()
        store.close()


def test_sendmail_outcomes_survive_sigkill_and_rotation(tmp_path):
    url = f"sqlite:///{tmp_path}/events.sqlite3"
    log = tmp_path / "mail.log"

    def send_all(run: str, rcpts: tuple[str, ...], rotate_after: int | None = None) -> None:
        messages = [
            {"data": message(r, "winter"), "rcpts": [r], "from": "news@example.com"} for r in rcpts
        ]
        replies = sendmail_maillog_driver.run(tmp_path / run, log, url, messages, rotate_after)
        assert all(reply["accepted"] for reply in replies), replies
        for rcpt, reply in zip(rcpts, replies, strict=True):
            with_queue_id(store, rcpt, reply["queue_id"])

    def kinds() -> collections.Counter:
        return collections.Counter((e["type"], e["rcpt_to"]) for e in outcomes(store))

    store = open_store(url)
    (tmp_path / "follower").mkdir()
    follower = RunningMaillog(
        tmp_path / "follower",
        events={"store": url},
        maillog={"source": str(log), "format": "sendmail"},
    )
    try:
        send_all("before", ("ok@example.org", "unknown@example.org"))
        follower.start()
        wait_until(lambda: len(kinds()) == 2, what="the first two outcomes")
        follower.kill()
        # While the follower is down: one outcome in the log, the log renamed away (as
        # logrotate does), then two outcomes in the new file.
        send_all("down", ("ok2@example.org", "ok3@example.org", "unknown3@example.org"), 1)
        assert sendmail_maillog_driver.rotated(log).exists() and log.exists()
        assert "ok2@example.org" not in log.read_text()
        seen = len(follower.log_lines())
        follower.start()
        later = {
            ("delivery", "ok2@example.org"),
            ("delivery", "ok3@example.org"),
            ("bounce", "unknown3@example.org"),
        }
        wait_until(lambda: later <= set(kinds()), what="the outcomes after SIGKILL and rotation")
        follower.stop()
        assert kinds() == collections.Counter(
            {("delivery", "ok@example.org"): 1, ("bounce", "unknown@example.org"): 1}
            | dict.fromkeys(later, 1)
        )
        # No line read twice: after the restart the follower made the three later events
        # only (a repeat would not show in the store, whose event ids are derived).
        stored = [line for line in follower.log_lines()[seen:] if line.get("event") == "stored"]
        made = sum(line.get(kind, 0) for line in stored for kind in ("delivery", "bounce"))
        assert made == 3, stored
    finally:
        follower.stop()
        store.close()
