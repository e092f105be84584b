"""The follower in-process on both stores: what it joins, what it skips, what it records
once (expiry said twice), and that its position commits with its events on PostgreSQL too."""

from __future__ import annotations

import gc
import uuid

import pytest

from smtpapi_milter.delivery.bounce_class import BounceClassifier
from smtpapi_milter.events.store import open_store
from smtpapi_milter.maillog import position
from smtpapi_milter.maillog.file_source import FileSource
from smtpapi_milter.maillog.follower import Follower
from smtpapi_milter.maillog.postfix import PostfixParser

from . import maillog_lines as pf
from .test_maillog_follower import START, injection, qid


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/events.sqlite3"
    else:
        url = request.getfixturevalue("postgres").create_database(f"m_{uuid.uuid4().hex[:12]}")
    opened = open_store(url)
    yield opened
    opened.close()


def follow(store, log, *, record_unknown=False) -> Follower:
    follower = Follower(
        store,
        FileSource(log, position.load(store, str(log))),
        PostfixParser(),
        BounceClassifier.load(),
        record_unknown=record_unknown,
        batch_lines=3,
    )
    follower.run_once()
    follower.source.close()
    return follower


def test_position_and_events_commit_together(store, tmp_path):
    log = tmp_path / "maillog"
    store.record([injection(0), injection(1)])
    log.write_text(pf.sent(START, qid(0), "r0@example.org") + "\n")
    follow(store, log)
    stored = position.load(store, str(log))
    assert stored.offset == log.stat().st_size and stored.inode == log.stat().st_ino
    with log.open("a") as handle:
        handle.write(pf.deferred(START, qid(1), "r1@example.org") + "\n")
    follow(store, log)
    follow(store, log)  # nothing new: nothing stored twice
    assert [e["type"] for e in store.query(types=["delivery", "delay"])] == ["delivery", "delay"]


def test_expiry_bounces_each_undelivered_recipient_once(store, tmp_path):
    log = tmp_path / "maillog"
    store.record([injection(1)])
    expired = f"{qid(1)}: from=<news@example.com>, status=expired, returned to sender"
    per_rcpt = (
        f"{qid(1)}: to=<r1@example.org>, relay=none, delay=432000, delays=432000/0/0/0, "
        "dsn=4.4.1, status=expired, returned to sender"
    )
    log.write_text(
        "\n".join(
            [
                pf.deferred(START, qid(1), "r1@example.org"),
                pf.line(START + 5, "qmgr", 10648, expired),
                pf.line(START + 5, "error", 10700, per_rcpt),
            ]
        )
        + "\n"
    )
    follow(store, log)
    (bounce,) = store.query(types=["bounce"])
    assert bounce["raw_reason"].startswith("452 4.2.2") and bounce["num_retries"] == "1"
    assert bounce["campaign_id"] == "autumn" and bounce["mta_queue_id"] == qid(1)


def test_unknown_messages_and_notices_to_the_sender(store, tmp_path):
    log = tmp_path / "maillog"
    notice = f"{qid(5)}: sender non-delivery notification: 7F0000NOTICE"
    log.write_text(
        "\n".join(
            [
                pf.bounced(START, qid(5), "stranger@example.net"),
                pf.line(START, "bounce", 10701, notice),
                pf.sent(START + 1, "7F0000NOTICE", "news@example.com"),
            ]
        )
        + "\n"
    )
    follow(store, log)
    assert store.query(types=["bounce", "delivery"]) == []  # never injected: ignored
    (tmp_path / "again").write_text(log.read_text())
    follow(store, tmp_path / "again", record_unknown=True)
    (bounce,) = store.query(types=["bounce", "delivery"])  # the notice is no delivery
    assert (bounce["rcpt_to"], bounce["campaign_id"], bounce["bounce_class"]) == (
        "stranger@example.net",
        "",
        "10",
    )


def test_a_store_outage_keeps_the_batch_and_stores_it_once_when_back(postgres_running, tmp_path):
    import threading
    import time

    server = postgres_running
    store = open_store(server.create_database(f"m_{uuid.uuid4().hex[:12]}"), connect_timeout=2)
    log = tmp_path / "maillog"
    log.write_text("")
    store.record([injection(0), injection(1)])
    follower = Follower(
        store, FileSource(log, None), PostfixParser(), BounceClassifier.load(), poll_interval=0.05
    )
    thread = threading.Thread(target=follower.run)
    try:
        server.stop()
        thread.start()
        log.write_text(
            pf.sent(START, qid(0), "r0@example.org")
            + "\n"
            + pf.bounced(START, qid(1), "r1@example.org")
            + "\n"
        )
        deadline = time.monotonic() + 30
        while follower.store_failures == 0:  # it read the lines and met the outage
            assert time.monotonic() < deadline, "the follower never tried the store"
            time.sleep(0.05)
        assert follower.stored == 0
        server.start()
        deadline = time.monotonic() + 30
        while follower.stored < 2:
            assert time.monotonic() < deadline, "nothing stored after the store came back"
            time.sleep(0.05)
    finally:
        follower.stop()
        thread.join(10)
        follower.source.close()
        if not server.running:
            server.start()
    assert sorted(e["type"] for e in store.query(types=["delivery", "bounce"])) == [
        "bounce",
        "delivery",
    ]
    assert position.load(store, str(log)).offset == log.stat().st_size
    store.close()


class CollectorWatchingParser(PostfixParser):
    """Notes whether Python's cyclic collector ran while the follower parsed each line."""

    def __init__(self) -> None:
        super().__init__()
        self.collector_enabled: list[bool] = []

    def feed_all(self, line):
        self.collector_enabled.append(gc.isenabled())
        return super().feed_all(line)


def test_the_cyclic_collector_is_paused_for_a_batch_and_back_after(store, tmp_path):
    # Over the bench's 200,000 lines it took 11% of the follower's CPU scanning the batch's
    # (acyclic) events again and again; see follower._collector_paused.
    log = tmp_path / "maillog"
    store.record([injection(0), injection(1)])
    log.write_text(
        pf.sent(START, qid(0), "r0@example.org")
        + "\n"
        + pf.sent(START, qid(1), "r1@example.org")
        + "\n"
    )
    parser = CollectorWatchingParser()
    follower = Follower(store, FileSource(log, None), parser, BounceClassifier.load())
    assert gc.isenabled()
    follower.run_once()
    follower.source.close()
    assert parser.collector_enabled == [False, False] and gc.isenabled()
    assert follower.stored == 2
