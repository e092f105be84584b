"""The follower as a real process on a real file: SIGKILL mid-way, rotation by rename and by
copytruncate (while it runs and while it is down), a file replaced under it. Every outcome
must be stored exactly once."""

from __future__ import annotations

import collections
import gzip
import os
import shutil
import time
from pathlib import Path

import pytest

from smtpapi_milter.events.store import open_store

from . import maillog_lines as pf
from .harness.smtpapi import RunningMaillog

START = time.time() - 3600


def injection(i: int) -> dict:
    return {
        "type": "injection",
        "event_id": str(10_000 + i),
        "timestamp": str(int(START)),
        "transmission_id": f"t{i}",
        "message_id": f"m{i}",
        "campaign_id": "autumn",
        "customer_id": "",
        "rcpt_to": f"r{i}@example.org",
        "raw_rcpt_to": f"r{i}@example.org",
        "rcpt_tags": ["news"],
        "rcpt_meta": {"n": str(i)},
        "msg_from": "news@example.com",
        "friendly_from": "news@example.com",
        "subject": "Autumn",
        "injection_time": "2026-12-04T10:00:00.000+00:00",
        "delv_method": "esmtp",
        "mta_queue_id": qid(i),
    }


def qid(i: int) -> str:
    return f"4F{i:08X}"


def message_lines(i: int) -> list[str]:
    """Every third message delivered, every third delayed once then delivered, the rest
    bounced: expected() says what each gives."""
    when = START + i
    lines = pf.received(when, qid(i), "news@example.com")
    rcpt = f"r{i}@example.org"
    if i % 3 == 0:
        lines.append(pf.sent(when, qid(i), rcpt))
    elif i % 3 == 1:
        lines += [pf.deferred(when, qid(i), rcpt), pf.sent(when + 1, qid(i), rcpt)]
    else:
        lines.append(pf.bounced(when, qid(i), rcpt))
    return [*lines, pf.removed(when, qid(i))]


def expected(count: int) -> collections.Counter:
    want: collections.Counter = collections.Counter()
    for i in range(count):
        kinds = [["delivery"], ["delay", "delivery"], ["bounce"]][i % 3]
        want.update((kind, qid(i)) for kind in kinds)
    return want


def write(path: Path, first: int, last: int) -> None:
    with path.open("a") as log:
        for i in range(first, last):
            log.write("\n".join(message_lines(i)) + "\n")


@pytest.fixture()
def setup(tmp_path):
    log = tmp_path / "maillog"
    log.touch()
    follower = RunningMaillog(tmp_path, maillog={"source": str(log), "batch_lines": 7})
    store = open_store(f"sqlite:///{tmp_path}/state/events.sqlite3")
    store.record([injection(i) for i in range(900)])
    yield follower, store, log
    follower.stop()
    store.close()


def outcomes(store) -> collections.Counter:
    events = store.query(types=["delivery", "delay", "bounce"])
    return collections.Counter((e["type"], e["mta_queue_id"]) for e in events)


def wait_for(store, want: collections.Counter, timeout: float = 60) -> collections.Counter:
    deadline = time.monotonic() + timeout
    while (got := outcomes(store)) != want and time.monotonic() < deadline:
        if any(got[key] > want[key] for key in got):
            break  # a duplicate: no point waiting
        time.sleep(0.05)
    return got


def wait_for_some(store, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while sum(outcomes(store).values()) < at_least:
        assert time.monotonic() < deadline, "the follower stored nothing"
        time.sleep(0.005)


def test_sigkill_and_rotation_while_down_store_every_outcome_once(setup):
    follower, store, log = setup
    write(log, 0, 300)
    follower.start()
    wait_for_some(store, 20)
    follower.kill()
    killed_at = sum(outcomes(store).values())
    assert killed_at < sum(expected(300).values()), "killed too late to prove anything"

    # Rename rotation while it is down; the writer adds to the old file before reopening.
    write(log, 300, 330)
    log.rename(log.with_name("maillog.1"))
    write(log.with_name("maillog.1"), 330, 340)
    write(log, 340, 500)
    follower.start()
    wait_for_some(store, killed_at + 50)
    follower.kill()

    # copytruncate while it is down: unread lines are only in the copy now.
    write(log, 500, 600)
    log.with_name("maillog.1").rename(log.with_name("maillog.2"))
    shutil.copyfile(log, log.with_name("maillog.1"))
    os.truncate(log, 0)
    write(log, 600, 700)
    follower.start()
    assert wait_for(store, expected(700)) == expected(700)

    follower.stop()  # SIGTERM: a clean stop, then a restart reads nothing again
    follower.start()
    write(log, 700, 710)
    assert wait_for(store, expected(710)) == expected(710)


def test_rotation_while_following(setup):
    follower, store, log = setup
    follower.start()
    write(log, 0, 50)
    assert wait_for(store, expected(50)) == expected(50)
    # rename + reopen, with lines still going to the old file after the rename
    log.rename(log.with_name("maillog.1"))
    write(log.with_name("maillog.1"), 50, 60)
    write(log, 60, 100)
    assert wait_for(store, expected(100)) == expected(100)
    # copytruncate
    write(log, 100, 150)
    shutil.copyfile(log, log.with_name("maillog.2"))
    os.truncate(log, 0)
    write(log, 150, 200)
    assert wait_for(store, expected(200)) == expected(200)


def test_a_file_replaced_while_down_is_read_from_its_start(setup):
    follower, store, log = setup
    write(log, 0, 30)
    follower.start()
    assert wait_for(store, expected(30)) == expected(30)
    follower.stop()
    # Same inode, new content longer than the old: only the tail guard can tell.
    with log.open("r+") as handle:
        handle.truncate(0)
        handle.write("".join(line + "\n" for i in range(30, 90) for line in message_lines(i)))
    follower.start()
    want = expected(90)
    assert wait_for(store, want) == want


def test_delay_then_delivery_counts_retries_and_copies_the_injection(setup):
    follower, store, log = setup
    write(log, 0, 3)
    follower.start()
    assert wait_for(store, expected(3)) == expected(3)
    delay, delivery = store.query(types=["delay", "delivery"], rcpt="r1@example.org")
    assert (delay["num_retries"], delivery["num_retries"]) == ("0", "1")
    assert delivery["campaign_id"] == "autumn" and delivery["rcpt_tags"] == ["news"]
    assert delivery["rcpt_meta"] == {"n": "1"} and delivery["transmission_id"] == "t1"
    assert delay["error_code"] == "452" and delay["bounce_class"] == "22"
    assert delay["reason"] == "452 4.2.2 : mailbox full"
    (bounce,) = store.query(types=["bounce"])
    assert (bounce["bounce_class"], bounce["error_code"]) == ("10", "550")
    assert bounce["routing_domain"] == "example.org" and bounce["ip_address"] == "192.0.2.25"


def test_two_rotations_while_down_one_gzipped(setup):
    follower, store, log = setup
    write(log, 0, 20)
    follower.start()
    assert wait_for(store, expected(20)) == expected(20)
    follower.kill()
    write(log, 20, 30)  # unread, then rotated away and compressed
    log.rename(log.with_name("maillog.1"))
    write(log, 30, 40)
    older, packed_name = log.with_name("maillog.1"), log.with_name("maillog.2.gz")
    with older.open("rb") as plain, gzip.open(packed_name, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    log.with_name("maillog.1").unlink()
    log.rename(log.with_name("maillog.1"))
    write(log, 40, 50)
    follower.start()
    assert wait_for(store, expected(50)) == expected(50)
