"""The pipeline's suppression check and the milter's cache of the list, on a real store
(SQLite here; the store's own SQL runs on both backends in its tests). The milter applying
it through Postfix: tests/test_suppression_postfix.py."""

from __future__ import annotations

import dataclasses

import pytest

from smtpapi_milter.config import SmtpapiConfig, parse_config
from smtpapi_milter.events.store import LazyStore, StoreUnavailable, open_store
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.policy import PolicySet
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.settings import TagRegistry, resolve
from smtpapi_milter.suppression.cache import SuppressionCache
from smtpapi_milter.suppression.exemption import checked_against
from smtpapi_milter.suppression.store import suppress, unsuppress
from smtpapi_milter.tokens import TokenCodec

CODEC = TokenCodec([("test", bytes(range(32)))])
NEWSLETTER = b'{"campaign_id": "weekly", "options": {"open_tracking": true}}'
BODY = b"<html><body><a href='https://example.com/a'>a</a></body></html>\r\n"


class Clock:
    """Time as the test sets it (the cache's staleness is about time passing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store(tmp_path):
    opened = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    yield opened
    opened.close()


def session(store, recipients, header=NEWSLETTER, policies=None, **smtpapi):
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    cache = SuppressionCache(store, 60)
    s = Pipeline(config, policies, codec=CODEC, suppression=cache).session()
    s.connect("192.0.2.1")
    s.mail_from("news@example.com")
    for rcpt in recipients:
        s.rcpt(rcpt)
    headers = [("From", b"news@example.com"), ("Content-Type", b"text/html")]
    if header is not None:
        headers.append(("X-MSYS-API", header))
    return s, headers


def test_suppressed_recipients_leave_the_message_the_rest_get_copies(store):
    suppress(store, "gone@example.org", source="list_unsubscribe")
    s, headers = session(store, ["a@example.org", "Gone@Example.org", "b@example.org"])
    result = s.end_of_message(headers, BODY)
    assert [(x.recipient, x.source) for x in result.suppressed] == [
        ("Gone@Example.org", "list_unsubscribe")
    ]
    assert [c.recipient for c in result.copies] == ["a@example.org", "b@example.org"]
    reply = result.suppressed[0].reply
    assert str(reply) == "550 5.7.1 recipient is on the suppression list (list_unsubscribe)"
    # The copy that stays in the transaction names the queue id; message ids stay distinct.
    assert len({c.message_id for c in result.copies}) == 2


def test_shared_body_goes_to_the_rest(store):
    suppress(store, "gone@example.org")
    s, headers = session(store, ["gone@example.org", "a@example.org"], multi_recipient="shared")
    result = s.end_of_message(headers, BODY, shared=True)
    assert [x.recipient for x in result.suppressed] == ["gone@example.org"]
    assert [c.recipient for c in result.copies] == [None]


def test_nobody_left_refuses_the_message(store):
    suppress(store, "gone@example.org")
    suppress(store, "also@example.org", source="bounce")
    s, headers = session(store, ["gone@example.org"])
    with pytest.raises(SmtpReplyError) as one:
        s.end_of_message(headers, BODY)
    assert str(one.value.reply) == "550 5.7.1 recipient is on the suppression list (manual)"
    s, headers = session(store, ["gone@example.org", "also@example.org"])
    with pytest.raises(SmtpReplyError) as both:
        s.end_of_message(headers, BODY)
    assert str(both.value.reply) == "550 5.7.1 every recipient is on the suppression list"


def test_untracked_mail_is_checked_too(store):
    suppress(store, "gone@example.org")
    s, headers = session(store, ["gone@example.org", "a@example.org"], header=None)
    result = s.end_of_message(headers, BODY)
    assert [x.recipient for x in result.suppressed] == ["gone@example.org"]


def test_a_transactional_entry_does_not_block_newsletters(store):
    suppress(store, "gone@example.org", type="transactional")
    s, headers = session(store, ["gone@example.org"])
    assert s.end_of_message(headers, BODY).suppressed == []


def test_transactional_mail_is_checked_against_transactional_entries_only(store):
    receipt = b'{"options": {"open_tracking": true, "transactional": true}}'
    suppress(store, "news-gone@example.org")
    suppress(store, "all-gone@example.org", type="transactional")
    rcpts = ["news-gone@example.org", "all-gone@example.org", "a@example.org"]
    s, headers = session(store, rcpts, header=receipt)
    result = s.end_of_message(headers, BODY)
    assert [x.recipient for x in result.suppressed] == ["all-gone@example.org"]


def test_skip_suppression_skips_the_check(store):
    skip = b'{"options": {"open_tracking": true, "skip_suppression": true}}'
    suppress(store, "gone@example.org")
    s, headers = session(store, ["gone@example.org"], header=skip)
    assert s.end_of_message(headers, BODY).suppressed == []


def test_which_entries_apply_follows_the_settings_flags():
    plain = resolve(SmtpapiConfig(), None, {}, TagRegistry())
    assert checked_against(plain) == "non_transactional"
    assert checked_against(None) == "non_transactional"  # never read: failing open
    receipt = dataclasses.replace(plain, transactional=True)
    assert checked_against(receipt) == "transactional"
    assert checked_against(dataclasses.replace(receipt, skip_suppression=True)) is None
    assert checked_against(dataclasses.replace(plain, skip_suppression=True)) is None


def test_a_policy_verdict_still_comes_before_the_list(store, tmp_path):
    (tmp_path / "p.py").write_text(
        "def validate_data_spool_each_rcpt(ctx):\n    ctx.reject('no thanks')\n"
    )
    suppress(store, "gone@example.org")
    s, headers = session(store, ["gone@example.org"], policies=PolicySet.load(str(tmp_path)))
    with pytest.raises(SmtpReplyError) as info:
        s.end_of_message(headers, BODY)
    assert "no thanks" in str(info.value.reply)


# --- the cache ------------------------------------------------------------------------------


def test_cache_answers_from_memory_within_its_period_then_asks_again(store):
    clock = Clock()
    cache = SuppressionCache(store, 60, clock=clock)
    suppress(store, "gone@example.org")
    assert cache.suppressed(["Gone@Example.org", "a@example.org"], transactional=False) == {
        "Gone@Example.org": "manual"
    }
    assert cache.queries == 1
    unsuppress(store, "gone@example.org")
    suppress(store, "a@example.org")
    clock.now += 59.9  # within the bound: what the store said a minute ago
    assert cache.suppressed(["gone@example.org", "a@example.org"], transactional=False) == {
        "gone@example.org": "manual"
    }
    assert cache.queries == 1
    clock.now += 0.1  # the staleness bound reached: both changes show
    assert cache.suppressed(["gone@example.org", "a@example.org"], transactional=False) == {
        "a@example.org": "manual"
    }
    assert cache.queries == 2


def test_cache_keeps_the_kinds_of_mail_apart(store):
    cache = SuppressionCache(store, 60)
    suppress(store, "gone@example.org", type="transactional")
    assert cache.suppressed(["gone@example.org"], transactional=False) == {}
    assert cache.suppressed(["gone@example.org"], transactional=True) == {
        "gone@example.org": "manual"
    }


def test_cache_of_zero_seconds_always_asks(store):
    cache = SuppressionCache(store, 0)
    for _ in range(3):
        cache.suppressed(["a@example.org"], transactional=False)
    assert cache.queries == 3


def test_cache_memory_is_bounded(store):
    clock = Clock()
    cache = SuppressionCache(store, 60, clock=clock, max_entries=100)
    for n in range(1000):
        cache.suppressed([f"r{n}@example.org"], transactional=False)
    assert len(cache._entries) <= 100


def test_a_store_that_is_down_raises_so_the_milter_tempfails():
    cache = SuppressionCache(LazyStore("postgresql://127.0.0.1:1/events"), 60)
    with pytest.raises(StoreUnavailable):
        cache.suppressed(["a@example.org"], transactional=False)
