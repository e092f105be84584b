"""Hard bounces from the maillog follower put the recipient on the suppression list, in the
follower's own transaction (SPEC 14); ``[suppression] bounce_classes`` chooses the classes."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import pytest

from smtpapi_milter.config import ConfigError, parse_config
from smtpapi_milter.delivery.bounce_class import BounceClassifier
from smtpapi_milter.events.store import open_store
from smtpapi_milter.maillog import position
from smtpapi_milter.maillog.file_source import FileSource
from smtpapi_milter.maillog.follower import Follower
from smtpapi_milter.maillog.postfix import PostfixParser
from smtpapi_milter.suppression.store import list_entries, lookup

from . import maillog_lines as pf
from .harness.smtpapi import RunningMaillog
from .test_maillog_follower import START, injection, qid
from .test_maillog_join import follow, store  # noqa: F401 (fixture: SQLite and PostgreSQL)


def expiry_lines(i: int) -> list[str]:
    """A message deferred (mailbox full) until it expired: a bounce of class 22, soft."""
    rcpt = f"r{i}@example.org"
    per_rcpt = (
        f"{qid(i)}: to=<{rcpt}>, relay=none, delay=432000, delays=432000/0/0/0, "
        "dsn=4.4.1, status=expired, returned to sender"
    )
    return [
        pf.deferred(START, qid(i), rcpt),
        pf.line(START + 5, "qmgr", 10648, f"{qid(i)}: from=<n@example.com>, status=expired"),
        pf.line(START + 5, "error", 10700, per_rcpt),
    ]


def test_hard_bounces_suppress_soft_ones_do_not(store, tmp_path):  # noqa: F811
    log = tmp_path / "maillog"
    store.record([injection(0), injection(1), injection(2)])
    lines = [pf.bounced(START, qid(0), "r0@example.org"), pf.sent(START, qid(1), "r1@example.org")]
    log.write_text("\n".join(lines + expiry_lines(2)) + "\n")
    follow(store, log)
    classes = {e["rcpt_to"]: e["bounce_class"] for e in store.query(types=["bounce"])}
    assert classes == {"r0@example.org": "10", "r2@example.org": "22"}
    entries = list_entries(store)
    assert [(e.recipient, e.type, e.source) for e in entries] == [
        ("r0@example.org", "non_transactional", "bounce"),
        ("r0@example.org", "transactional", "bounce"),
    ]
    assert entries[0].description.startswith("bounce class 10: 550 5.1.1")
    everyone = ["r0@example.org", "r1@example.org", "r2@example.org"]
    assert lookup(store, everyone, transactional=True) == {"r0@example.org"}


def test_bounce_classes_are_configurable(store, tmp_path):  # noqa: F811
    log = tmp_path / "maillog"
    store.record([injection(0), injection(2)])
    log.write_text("\n".join([pf.bounced(START, qid(0), "r0@example.org"), *expiry_lines(2)]))
    follower = Follower(
        store, FileSource(log, None), PostfixParser(), BounceClassifier.load(), batch_lines=3
    )
    follower.bounce_classes = frozenset(
        parse_config({"suppression": {"bounce_classes": [22]}}).suppression.bounce_classes
    )
    follower.run_once()
    follower.source.close()
    assert {e.recipient for e in list_entries(store)} == {"r2@example.org"}


def test_the_entry_commits_with_the_bounce_and_the_position(tmp_path):
    """A suppression that cannot be written holds back the batch's events and position (the
    follower keeps the batch and retries), and all three commit together once it can."""
    url = f"sqlite:///{tmp_path}/events.sqlite3"
    with contextlib.closing(sqlite3.connect(tmp_path / "events.sqlite3")) as db:
        with contextlib.closing(open_store(url)) as first:
            first.record([injection(0)])
        db.execute("ALTER TABLE suppressions RENAME TO suppressions_away")
        db.commit()
        log = tmp_path / "maillog"
        log.write_text(pf.bounced(START, qid(0), "r0@example.org") + "\n")
        with contextlib.closing(open_store(url)) as events:
            follower = Follower(
                events, FileSource(log, None), PostfixParser(), BounceClassifier.load()
            )
            thread = threading.Thread(target=follower.run)
            thread.start()
            try:
                deadline = time.monotonic() + 30
                while follower.store_failures < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert follower.store_failures >= 1
                assert events.query(types=["bounce"]) == []
                assert position.load(events, str(log)) is None
                db.execute("ALTER TABLE suppressions_away RENAME TO suppressions")
                db.commit()
                while follower.stored < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                follower.stop()
                thread.join(30)
                follower.source.close()
            assert [e["rcpt_to"] for e in events.query(types=["bounce"])] == ["r0@example.org"]
            assert len(list_entries(events)) == 2
            assert position.load(events, str(log)).offset == log.stat().st_size


def test_the_maillog_service_suppresses_with_the_configured_classes(tmp_path):
    log = tmp_path / "maillog"
    log.touch()
    follower = RunningMaillog(
        tmp_path, maillog={"source": str(log)}, suppression={"bounce_classes": [10, 22]}
    )
    url = f"sqlite:///{tmp_path}/state/events.sqlite3"
    with contextlib.closing(open_store(url)) as events:
        events.record([injection(0), injection(2)])
        with follower:
            with log.open("a") as handle:
                handle.write("\n".join([pf.bounced(START, qid(0), "r0@example.org")]) + "\n")
                handle.write("\n".join(expiry_lines(2)) + "\n")
            deadline = time.monotonic() + 30
            while len(list_entries(events)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert {(e.recipient, e.source) for e in list_entries(events)} == {
            ("r0@example.org", "bounce"),
            ("r2@example.org", "bounce"),
        }
        assert len(list_entries(events)) == 4


def test_unknown_bounce_class_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'suppression.bounce_classes\[1\]' 11 is not a bounce"):
        parse_config({"suppression": {"bounce_classes": [10, 11]}}, "/etc/x.toml")
    with pytest.raises(ConfigError, match="'suppression.bounce_classes' must be a list of int"):
        parse_config({"suppression": {"bounce_classes": "10"}}, "/etc/x.toml")
