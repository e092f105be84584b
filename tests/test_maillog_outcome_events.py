"""outcome_event copies an injection's message fields in C (outcome_events._fields_of): the
event is what copying them one by one, in INJECTION_FIELDS order, gave, key order included
(the payload's JSON text follows it). outcome_row gives such an event's row as the store's
event_row does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpapi_milter.events.store import event_row
from smtpapi_milter.maillog.outcome import BOUNCED, DEFERRED, DELIVERED, MessageExpired, Outcome
from smtpapi_milter.maillog.outcome_events import (
    INJECTION_FIELDS,
    expired_outcome,
    outcome_event,
    outcome_row,
)

OUTCOME = Outcome(
    DELIVERED, 1_796_000_000.0, "4F0001A2", "r@example.org", "", "250 2.0.0 Ok", "250",
    "2.0.0", 0.5, "mx.example.org", "192.0.2.25", "esmtp", True, "line text",
)  # fmt: skip


def one_by_one(injection: dict) -> dict:
    """The message fields as the loop before _fields_of copied them."""
    event = {}
    for name in INJECTION_FIELDS:
        if name in injection:
            event[name] = injection[name]
    return event


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*INJECTION_FIELDS, "event_id", "timestamp", "type", "other"]),
            st.one_of(st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3))),
        ),
        max_size=20,
    )
)
@example([("timestamp", "INF")])  # regression: OverflowError making the event id
@example([("timestamp", "nan")])
def test_message_fields_are_copied_as_one_by_one(items):
    injection = dict(items)
    event = outcome_event(OUTCOME, injection, 0, None)
    fields = {name: event[name] for name in event if name in INJECTION_FIELDS}
    expected = one_by_one(injection)
    if not expected.get("rcpt_to"):  # multi_recipient = shared: the log's recipient
        expected["rcpt_to"], expected["raw_rcpt_to"] = "r@example.org", "r@example.org"
    assert list(fields.items()) == list(expected.items())
    assert list(event)[:3] == ["type", "event_id", "timestamp"]


# Values an injection may hold in its message fields: text with what text_column cleans
# (NUL, lone surrogates, non-ASCII), numbers, nothing, lists (tags), mappings (metadata).
ANY_VALUE = st.one_of(
    st.text(alphabet=st.sampled_from(["a", "B", "\0", "\x1f", "é", "\ud800", "@"]), max_size=6),
    st.integers(),
    st.none(),
    st.lists(st.one_of(st.text(max_size=3), st.none(), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*INJECTION_FIELDS, "event_id", "timestamp", "type", "user_agent_parsed"]),
        ANY_VALUE,
        max_size=16,
    ),
    st.booleans(),
    st.sampled_from([DELIVERED, DEFERRED, BOUNCED]),
    st.one_of(st.none(), st.integers(0, 1200)),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.floats(0, 4e9),
    st.text(max_size=8),
)
def test_outcome_row_is_event_row(injection, joined, kind, bounce_class, tls, seconds, when, qid):
    outcome = OUTCOME._replace(
        kind=kind, tls=tls, queue_seconds=seconds, time=when, queue_id=qid, original=qid
    )
    event = outcome_event(outcome, injection if joined else None, 3, bounce_class)
    assert outcome_row(event) == event_row(event)


def test_outcome_row_of_an_expired_recipient_is_event_row():
    expired = MessageExpired(1_796_000_000.0, "4F0001A2", "s@example.com")
    injection = {"rcpt_to": "r@example.org", "rcpt_tags": ["a", "b"], "event_id": "9"}
    for last_delay in (None, {"raw_reason": "452 full", "error_code": "452"}):
        outcome = expired_outcome(expired, injection, last_delay)
        event = outcome_event(outcome, injection, 1, 10)
        assert outcome_row(event) == event_row(event)
