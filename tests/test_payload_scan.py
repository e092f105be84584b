"""The C scan of JSON numbers (_native/jsonnum.c) against its reference in events/payload.py,
and payload.decode against the stdlib, value for value and type for type (1 and 1.0 are
equal, but not the same value stored), on texts with numbers of every kind, escapes near
quotes, and any text at all."""

from __future__ import annotations

import contextlib
import json
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.events import payload

if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":  # the references alone are under test
    pytest.skip("SMTPAPI_PURE_PYTHON=1: no native path to compare", allow_module_level=True)

native = payload._jsonnum.plain_numbers
reference = payload._plain_numbers_reference

NUMBERS = (
    st.integers()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**17, 10**18, 10**19, 2**63, 2**64, -(2**63) - 1])
    | st.floats(allow_nan=False)
)
# Strings with quotes and backslashes in them, so the scan's idea of where strings end is
# tested; digits in them, so numbers inside strings are seen as not numbers.
STRINGS = st.text(alphabet=st.sampled_from(list('"\\\\ab1.e0\u00e9\u2603\U0001f600\n')), max_size=8)
VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | STRINGS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(STRINGS, children, max_size=4)
    ),
    max_leaves=12,
)


JSONISH = '"\\\\[]{}:,-+.eE0123456789 ntrufalse\u00e9\u2603'


def texts_of(value) -> list[str]:
    """``value`` as every writer of payloads wrote it."""
    made = [
        json.dumps(value, separators=(",", ":")),
        json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        json.dumps(value),
    ]
    with contextlib.suppress(TypeError):  # beyond 64 bits: orjson refuses
        made.append(orjson.dumps(value).decode())
    return made


def same(a, b) -> bool:
    return repr(a) == repr(b)  # types too: 1 is not 1.0, -0.0 is not 0.0


def stdlib_or_error(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        return type(exc)


def decoded_or_error(text: str):
    try:
        return payload.decode(text)
    except ValueError as exc:
        return type(exc)


def test_native_is_built_and_chosen():
    assert payload._plain_numbers is native


@settings(max_examples=1500, deadline=None)
@given(VALUES)
def test_scan_and_decode_on_json_texts(value):
    for text in texts_of(value):
        assert native(text) == reference(text)
        assert same(payload.decode(text), json.loads(text))


@settings(max_examples=1500, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list('"\\\\[]{}:,-+.eE0123456789 ntrufalse\u00e9\u2603')),
        max_size=40,
    )
)
def test_scan_and_decode_on_any_text(text):
    assert native(text) == reference(text)
    assert same(decoded_or_error(text), stdlib_or_error(text))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_scan_on_arbitrary_text(text):
    assert native(text) == reference(text)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ('{"a":123456789012345678}', True),  # 18 digits: within 64 bits
        ('{"a":1234567890123456789}', False),
        ('{"a":1.0}', False),
        ('{"a":1e3}', False),
        ('{"a":"1.5 and 12345678901234567890"}', True),  # inside a string
        ('{"a\\\\":1.5}', False),  # the key ends after its escaped backslash
        ('{"a\\"":1}', True),
        ('{"a\\"1.5":1}', True),  # an escaped quote does not end the string
        ('"unterminated 1.5', True),
    ],
)
def test_scan_examples(text, plain):
    assert native(text) is plain
    assert reference(text) is plain
    assert same(decoded_or_error(text), stdlib_or_error(text))


def test_big_integers_stay_integers():
    text = '{"big":18446744073709551616,"tags":["x"]}'
    assert type(payload.decode(text)["big"]) is int
