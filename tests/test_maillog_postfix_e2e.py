"""Delivery outcomes end to end: the real milter inside a real private Postfix that relays
to a test MX answering per recipient (250; 452 4.2.2 mailbox full; 550 5.1.1 user
unknown), and the follower reading Postfix's own log file (maillog_file, postlogd).

One delivery, one delay and one bounce (class 10), each joined to its campaign and tags;
then the follower is SIGKILLed, Postfix retries the full mailbox, ``postfix logrotate``
renames and gzips the log, the mailbox accepts and a new message goes out: after a restart
the later outcomes arrive and none is recorded twice.
"""

from __future__ import annotations

import collections
import json
import smtplib
import subprocess
import time

import pytest

from smtpapi_milter.events.store import open_store
from smtpapi_milter.sandbox.postfix import PrivatePostfix, postfix_command

from .harness.answering_mx import AnsweringMX
from .harness.smtpapi import RunningMaillog, RunningMilter

pytestmark = pytest.mark.skipif(
    subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
    reason="the private Postfix needs root",
)


def message(rcpt: str, campaign: str) -> bytes:
    options = {"open_tracking": True, "click_tracking": True}
    tags = ["autumn", rcpt.split("@")[0]]
    header = json.dumps({"campaign_id": campaign, "tags": tags, "options": options})
    return (
        f"From: News <news@example.com>\r\nTo: {rcpt}\r\nSubject: Autumn news\r\n"
        f"X-MSYS-API: {header}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<html><body><a href="https://example.com/a">a</a></body></html>\r\n'
    ).encode()


def send(port: int, rcpt: str, campaign: str) -> str:
    """Send one message; the queue id Postfix gave it (from its 250 reply)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("news@example.com")
        client.rcpt(rcpt)
        code, reply = client.data(message(rcpt, campaign))
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def with_queue_id(store, rcpt: str, queue_id: str) -> None:
    """The injection of ``rcpt`` with ``mta_queue_id`` (the delivery-events branch makes the
    milter record it; until then the test writes it, and this does nothing once it does)."""
    deadline = time.monotonic() + 15
    while not (found := store.query(types=["injection"], rcpt=rcpt)):
        assert time.monotonic() < deadline, f"no injection for {rcpt}"
        time.sleep(0.05)
    (injection,) = found
    if injection.get("mta_queue_id"):
        assert injection["mta_queue_id"] == queue_id
        return
    injection["mta_queue_id"] = queue_id

    def work(cur):
        cur.execute(
            store.sql("UPDATE events SET mta_queue_id = ?, payload = ? WHERE event_id = ?"),
            [queue_id, json.dumps(injection), injection["event_id"]],
        )

    store.transaction(work, write=True)


def outcomes(store) -> list[dict]:
    return store.query(types=["delivery", "delay", "bounce"])


def wait_until(condition, timeout: float = 60, what: str = "", postfix=None) -> None:
    """Until ``condition()``; a timeout fails with what ``postfix`` logged and holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            explained = f"\n{postfix.explain()}" if postfix is not None else ""
            raise AssertionError(f"timed out waiting for {what}{explained}")
        time.sleep(0.1)


def test_outcomes_through_postfix_survive_sigkill_and_logrotate(tmp_path):
    url = f"sqlite:///{tmp_path}/events.sqlite3"
    (tmp_path / "milter").mkdir()
    (tmp_path / "maillog").mkdir()
    with (
        AnsweringMX() as mx,
        RunningMilter(tmp_path / "milter", events={"store": url}) as milter,
        PrivatePostfix(smtpd_milters=milter.socket, relay_port=mx.port) as postfix,
    ):
        follower = RunningMaillog(
            tmp_path / "maillog",
            events={"store": url},
            maillog={"source": str(postfix.maillog), "format": "postfix"},
        )
        store = open_store(url)
        try:
            ids = {}
            for rcpt in ("ok@example.org", "full@example.org", "unknown@example.org"):
                ids[rcpt] = send(postfix.smtp_port, rcpt, "autumn-2026")
                with_queue_id(store, rcpt, ids[rcpt])
            follower.start()

            def kinds() -> collections.Counter:
                return collections.Counter((e["type"], e["rcpt_to"]) for e in outcomes(store))

            wait_until(
                lambda: (
                    {
                        ("delivery", "ok@example.org"),
                        ("delay", "full@example.org"),
                        ("bounce", "unknown@example.org"),
                    }
                    <= set(kinds())
                ),
                what="a delivery, a delay and a bounce",
                postfix=postfix,
            )
            by_type = {e["type"]: e for e in outcomes(store)}
            for event in by_type.values():
                assert event["campaign_id"] == "autumn-2026"
                assert event["rcpt_tags"][0] == "autumn"
                assert event["mta_queue_id"] == ids[event["raw_rcpt_to"]]
                assert event["transmission_id"] and event["subject"] == "Autumn news"
            bounce, delay = by_type["bounce"], by_type["delay"]
            assert (bounce["bounce_class"], bounce["error_code"]) == ("10", "550")
            assert "unknown@example.org" not in bounce["reason"]
            assert delay["error_code"] == "452" and "Mailbox full" in delay["raw_reason"]
            assert by_type["delivery"]["ip_address"] == "127.0.0.1"

            follower.kill()
            # Postfix retries the full mailbox (1-2 s backoff here) while nobody reads.
            postfix.wait_for_log(rf"{ids['full@example.org']}: .*status=deferred.*\n?", 5)
            deferred_before = count_deferrals(postfix, ids["full@example.org"])
            # (Timed out once in a whole `make test`, passing alone in 6-8 s: the next
            # failure carries Postfix's log and queue.)
            wait_until(
                lambda: count_deferrals(postfix, ids["full@example.org"]) > deferred_before,
                what="another deferral while the follower is down",
                postfix=postfix,
            )
            rotate = [postfix_command(), "-c", str(postfix.config_dir), "logrotate"]
            subprocess.run(rotate, check=True, capture_output=True, timeout=60)
            mx.accept_all()
            ids["ok2@example.org"] = send(postfix.smtp_port, "ok2@example.org", "autumn-2026")
            with_queue_id(store, "ok2@example.org", ids["ok2@example.org"])
            wait_until(
                lambda: len(mx.handler.delivered) >= 3, what="the retried delivery", postfix=postfix
            )
            follower.start()
            wait_until(
                lambda: (
                    {("delivery", "full@example.org"), ("delivery", "ok2@example.org")}
                    <= set(kinds())
                ),
                what="the outcomes after SIGKILL and logrotate",
                postfix=postfix,
            )
            follower.stop()
            counts = kinds()
            assert counts[("delivery", "ok@example.org")] == 1
            assert counts[("bounce", "unknown@example.org")] == 1
            assert counts[("delivery", "full@example.org")] == 1
            assert counts[("delivery", "ok2@example.org")] == 1
            logged = all_deferrals(postfix, ids["full@example.org"])
            assert counts[("delay", "full@example.org")] == logged >= 2
            (retried,) = store.query(types=["delivery"], rcpt="full@example.org")
            assert retried["num_retries"] == str(logged)
        finally:
            follower.stop()
            store.close()


def count_deferrals(postfix: PrivatePostfix, queue_id: str) -> int:
    return sum(
        f"{queue_id}: " in line and "status=deferred" in line for line in postfix.log_lines()
    )


def all_deferrals(postfix: PrivatePostfix, queue_id: str) -> int:
    """Deferrals in the current log and every rotated (gzipped) one."""
    import gzip

    total = count_deferrals(postfix, queue_id)
    for rotated in postfix.base_dir.glob("maillog.*"):
        with gzip.open(rotated, "rt") if rotated.suffix == ".gz" else rotated.open() as handle:
            text = handle.read()
        total += sum(
            f"{queue_id}: " in line and "status=deferred" in line for line in text.splitlines()
        )
    return total
