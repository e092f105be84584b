"""events/payload.py: orjson where it is exact, the stdlib where it is not; every event
round-trips as json would have round-tripped it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from smtpapi_milter.events import payload

# JSON values as events hold them: any text (lone surrogates too), any integer size.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), VALUES, max_size=6))
def test_round_trips_like_the_stdlib(event):
    assert payload.decode(payload.encode(event)) == json.loads(json.dumps(event))


@given(st.dictionaries(st.text(), VALUES, max_size=6))
def test_reads_what_the_stdlib_wrote(event):
    # Payloads stored before orjson: compact stdlib JSON with \\u escapes.
    for ascii_only in (True, False):
        stored = json.dumps(event, separators=(",", ":"), ensure_ascii=ascii_only)
        assert payload.decode(stored) == json.loads(stored)


def test_values_orjson_refuses_or_bends_go_through_the_stdlib():
    event = {
        "rcpt_meta": {"big": 2**70, "negative": -(2**65), "list": [12345678901234567890]},
        "user_agent": "\ud800 lone surrogate",
        "subject": "Ünïcode ✓",
    }
    text = payload.encode(event)
    back = payload.decode(text)
    assert back == event
    assert type(back["rcpt_meta"]["big"]) is int  # not the float orjson would read
    written_before = '{"rcpt_meta":{"n":123456789012345678901234567890,"x":1e400}}'
    assert payload.decode(written_before) == json.loads(written_before)


def test_compact_like_the_stdlib_encoder_it_replaces():
    assert payload.encode({"bounce_class": "10", "a": [1, 2]}) == '{"bounce_class":"10","a":[1,2]}'


def test_infinite_floats_are_kept_not_nulled():
    event = {"rcpt_meta": {"score": float("inf"), "low": float("-inf")}, "none": None}
    assert payload.decode(payload.encode(event)) == event
