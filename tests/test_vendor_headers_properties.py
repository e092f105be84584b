"""Property tests of the vendor header parsers (vendor_headers/): any header value, of any
accepted family, gives settings or a documented 550 5.6.0 reply in printable ASCII, and exactly
the accepted families' fields are deleted."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpapi_milter.cli import rewrite_message
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.vendor_headers import registry

from . import corpus
from . import vendor_examples as examples
from .test_vendor_headers import ALL, pipeline

# --- properties: any value gives settings or a 550 5.6.0 ----------------------------------------

NAMES = [
    "X-SMTPAPI",
    "X-Mailgun-Tag",
    "X-Mailgun-Variables",
    "X-Mailgun-Track",
    "X-Mailgun-Track-Clicks",
    "X-Mailgun-Track-Opens",
    "X-Mailgun-Campaign-Id",
    "X-Mailgun-Drop-Message",
    "X-Mailgun-Other",
    "X-PM-Tag",
    "X-PM-TrackOpens",
    "X-PM-TrackLinks",
    "X-PM-Metadata-key",
    "X-PM-Metadata-",
    "X-PM-Other",
]
WORDS = [b"yes", b"no", b"htmlonly", b"true", b"False", b"HtmlOnly", b"TextOnly", b"None", b"1"]
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
SENDGRID_KEYS = st.sampled_from(
    ["category", "unique_args", "filters", "to", "sub", "send_at", "asm_group_id", "x"]
)
FILTERS = st.dictionaries(
    st.sampled_from(["clicktrack", "opentrack", "bypass_list_management", "footer", "dkim"]),
    st.fixed_dictionaries(
        {
            "settings": st.dictionaries(
                st.sampled_from(["enable", "enable_text", "replace"]), JSON_TEXT
            )
        }
    )
    | JSON_TEXT,
)


def _json(value) -> bytes:
    return json.dumps(value).encode()


VALUES = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(WORDS),
    JSON_TEXT.map(_json),
    st.dictionaries(SENDGRID_KEYS, JSON_TEXT | FILTERS, max_size=4).map(_json),
    st.builds(lambda f: _json({"filters": f}), FILTERS),
)
_HEADER = r"(?:X-SMTPAPI|X-Mailgun-[\w-]+|X-PM-[\w-]*)"
# Every text read() may answer with (vendor_headers/ and xmsysapi.decode_value).
DOCUMENTED = re.compile(
    rf"{_HEADER} (?:header must be ASCII \(use \\u escapes or RFC 2047\) or UTF-8"
    r"|encoded-word has unknown charset .+"
    r"|encoded-word is not valid .+"
    r"|is not valid JSON: .+"
    r"|must be of type 'json object'"
    r"|must be one of .+, not .+"
    r"|header is not supported here: .+"
    r"|header names no metadata key \(X-PM-Metadata-<key>\))"
    r"|X-SMTPAPI (?:'[ -~]+' must be (?:of type 'json object'|0 or 1)"
    r"|'category' must be a string or a json array of strings"
    r"|'(?:to|sub|section|send_at|send_each_at)' is not supported here: .+"
    r"|'filters\.opentrack\.settings\.replace' is not supported here: .+"
    r"|filter '[ -~]*' is not supported here: .+)"
    rf"|message has more than one {_HEADER} header"
    rf"|message has headers of two vendors, {_HEADER} and {_HEADER}: use one vendor's headers",
    re.S,
)


def settings_or_reply(headers: list[tuple[str, bytes]], accepted=ALL):
    try:
        got = registry.read(headers, accepted)
    except SmtpReplyError as exc:
        reply = exc.reply
        assert (reply.code, reply.status) == ("550", "5.6.0"), reply
        assert DOCUMENTED.fullmatch(reply.text), reply.text
        assert reply.text.isascii() and reply.text.isprintable(), reply.text
        return reply.text
    owned = [
        name.lower()
        for name, _ in headers
        if any(f in accepted and registry.FAMILIES[f].owns(name) for f in registry.FAMILIES)
    ]
    deleted = [edit.name.lower() for edit in got.edits]
    assert sorted(deleted) == sorted(owned)  # each accepted field once, nothing else
    assert all(edit.value is None for edit in got.edits)
    return got


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(NAMES), VALUES), min_size=1, max_size=5),
    st.sets(st.sampled_from(registry.FAMILY_NAMES)),
)
def test_any_vendor_header_gives_settings_or_a_550(headers, accepted):
    settings_or_reply(headers, accepted)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES[:7]), VALUES), min_size=1, max_size=4))
def test_any_mailgun_or_sendgrid_value_through_the_pipeline_is_a_message_or_a_550(headers):
    """Through resolve() too: its limits see whatever the parsers let through."""
    extra = b"\r\n".join(
        n.encode() + b": " + v.replace(b"\r", b" ").replace(b"\n", b" ") for n, v in headers
    )
    message = corpus.wrap_html(examples.HTML, "base64", extra)
    try:
        rewrite_message(pipeline(), message)
    except SmtpReplyError as exc:
        assert (exc.reply.code, exc.reply.status) == ("550", "5.6.0"), exc.reply
