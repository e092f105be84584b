"""Delivery outcomes through the real Sendmail 8.17 (unpacked, in a private namespace, with
our milter), relaying to a test MX that answers per recipient: the follower reads Sendmail's
log (syslog() lines written to a file as rsyslog would) and records one delivery, one delay
and one bounce (class 10), each joined to its campaign and tags. Rotation and SIGKILL are
the file source's, proven with Postfix's log (test_maillog_postfix_e2e, test_maillog_follower)."""

from __future__ import annotations

import os

import pytest

from smtpapi_milter.events.store import open_store

from .harness import sendmail_maillog_driver
from .harness.smtpapi import RunningMaillog
from .test_maillog_postfix_e2e import message, wait_until, with_queue_id

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
