"""outcome_event copies an injection's message fields in C (outcome_events._fields_of): the
event is what copying them one by one, in INJECTION_FIELDS order, gave, key order included
(the payload's JSON text follows it)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.maillog.outcome import DELIVERED, Outcome
from smtpapi_milter.maillog.outcome_events import INJECTION_FIELDS, outcome_event

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
def test_message_fields_are_copied_as_one_by_one(items):
    injection = dict(items)
    event = outcome_event(OUTCOME, injection, 0, None)
    fields = {name: event[name] for name in event if name in INJECTION_FIELDS}
    expected = one_by_one(injection)
    if not expected.get("rcpt_to"):  # multi_recipient = shared: the log's recipient
        expected["rcpt_to"], expected["raw_rcpt_to"] = "r@example.org", "r@example.org"
    assert list(fields.items()) == list(expected.items())
    assert list(event)[:3] == ["type", "event_id", "timestamp"]
