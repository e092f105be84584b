"""X-MSYS-API parsing: Momentum's documented behaviour and replies (SPEC 2, seeds 000/001)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpapi_milter import xmsysapi
from smtpapi_milter.replies import SmtpReplyError


def reject_text(value):
    with pytest.raises(SmtpReplyError) as info:
        xmsysapi.parse(value)
    reply = info.value.reply
    assert (reply.code, reply.status) == ("550", "5.6.0")
    return reply.text


def test_documented_folding_adds_one_space():
    # Seed 000: "my_awes\n   ome_campaign" reads "my_awes ome_campaign".
    value = (
        b'{"options" : {"open_tracking" : false }, "campaign_id" : "my_awes\r\n   ome_campaign" }'
    )
    parsed = xmsysapi.parse(value)
    assert parsed.campaign_id == "my_awes ome_campaign"
    assert parsed.open_tracking is False
    assert parsed.click_tracking is None


def test_documented_multiline_example():
    value = (
        b'{"options" : {"open_tracking" : false, "click_tracking" : true},\n'
        b'   "metadata" : {"key" : "value"}, "tags" : ["cat", "dog"], "campaign_id" :\n'
        b'   "my_campaign"}'
    )
    parsed = xmsysapi.parse(value)
    assert parsed.metadata == {"key": "value"}
    assert parsed.tags == ["cat", "dog"]
    assert parsed.campaign_id == "my_campaign"
    assert (parsed.open_tracking, parsed.click_tracking) == (False, True)


def test_unicode_escapes_are_json():
    value = b'{"metadata" : {"my_utf8" : "\\u00e7\\u00a7\\u0081"}, "campaign_id": "x"}'
    assert xmsysapi.parse(value).metadata == {"my_utf8": "\u00e7\u00a7\u0081"}


def test_rfc2047_encoded_words_are_decoded_before_json():
    text = '{"campaign_id": "café ✓", "tags": ["naïve"]}'
    import base64

    encoded = "=?utf-8?B?" + base64.b64encode(text.encode()).decode() + "?="
    parsed = xmsysapi.parse(encoded.encode())
    assert parsed.campaign_id == "café ✓"
    assert parsed.tags == ["naïve"]


def test_rfc2047_q_encoding_and_adjacent_words():
    # In Q encoding "_" is a space, so a literal underscore travels as =5F.
    value = b'=?iso-8859-1?Q?{"campaign=5Fid":_"caf=E9?= =?utf-8?Q?_=E2=9C=93"}?='
    assert xmsysapi.parse(value).campaign_id == "café ✓"
    underscore_as_space = b'=?utf-8?Q?{"campaign_id":"x"}?='
    assert xmsysapi.parse(underscore_as_space).raw == {"campaign id": "x"}


def test_raw_utf8_accepted_other_8bit_rejected():
    assert xmsysapi.parse('{"campaign_id": "ünï"}'.encode()).campaign_id == "ünï"
    assert "UTF-8" in reject_text(b'{"campaign_id": "\xe9t\xe9"}')


def test_unknown_charset_in_encoded_word_rejected():
    assert "charset" in reject_text(b"=?x-nonsense?Q?{}?=")


@pytest.mark.parametrize(
    "value, text",
    [
        (b'{"metadata": []}', "X-MSYS-API 'metadata' must be of type 'json object'"),
        (b'{"metadata": "k=v"}', "X-MSYS-API 'metadata' must be of type 'json object'"),
        (b'{"campaign_id": 7}', "X-MSYS-API 'campaign_id' must be of type 'string'"),
        (b'{"tags": "cat"}', "X-MSYS-API 'tags' must be of type 'json array'"),
        (b'{"tags": ["cat", 2]}', "X-MSYS-API 'tags' elements must be of type 'string'"),
        (b'{"options": true}', "X-MSYS-API 'options' must be of type 'json object'"),
        (
            b'{"options": {"open_tracking": "false"}}',
            "X-MSYS-API 'options.open_tracking' must be of type 'boolean'",
        ),
        (
            b'{"options": {"click_tracking": 1}}',
            "X-MSYS-API 'options.click_tracking' must be of type 'boolean'",
        ),
        (b"[1, 2]", "X-MSYS-API must be of type 'json object'"),
    ],
)
def test_type_errors_use_momentum_wording(value, text):
    assert reject_text(value) == text


@pytest.mark.parametrize("value", [b"{", b"{'a': 1}", b"", b'{"a": NaN}', b"{} {}", b"nul"])
def test_invalid_json_rejected(value):
    assert reject_text(value).startswith("X-MSYS-API is not valid JSON")


def test_a_remembered_pass_keeps_every_message_its_own_values():
    # The schema check of a campaign's header is remembered, never a verdict on another text
    # nor the parsed values: each message gets its own dict (policies may change theirs).
    value = b'{"campaign_id": "weekly", "metadata": {"n": 1}}'
    first, second = xmsysapi.parse(value), xmsysapi.parse(value)
    assert first.raw == second.raw and first.raw is not second.raw
    bad = b'{"campaign_id": "weekly", "metadata": [1]}'
    for _ in range(2):
        assert reject_text(bad) == "X-MSYS-API 'metadata' must be of type 'json object'"


def test_unknown_fields_ignored():
    parsed = xmsysapi.parse(b'{"campaign_id": "c", "future_field": {"x": 1}}')
    assert parsed.campaign_id == "c"
    assert parsed.raw["future_field"] == {"x": 1}


def test_deep_nesting_is_a_reply_not_a_crash():
    assert reject_text(b"[" * 100000 + b"]" * 100000).startswith("X-MSYS-API")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_get_a_550(value):
    try:
        xmsysapi.parse(value)
    except SmtpReplyError as exc:
        assert exc.reply.code == "550"


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "campaign_id": st.text(max_size=30),
            "metadata": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
            "tags": st.lists(st.text(max_size=8), max_size=12),
            "options": st.fixed_dictionaries(
                {}, optional={"open_tracking": st.booleans(), "click_tracking": st.booleans()}
            ),
        },
    ),
    st.integers(min_value=20, max_value=90),
)
def test_valid_headers_round_trip_through_any_folding(data, width):
    text = json.dumps(data, ensure_ascii=True)
    # Fold only at spaces that are outside strings: after ", " separators json.dumps writes.
    pieces = text.split(", ")
    folded, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            folded.append(line + ",")
            line = piece
        else:
            line = f"{line}, {piece}" if line else piece
    folded.append(line)
    value = "\r\n  ".join(folded).encode()
    parsed = xmsysapi.parse(value)
    assert parsed.raw == data
