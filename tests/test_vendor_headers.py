"""Other vendors' headers (SPEC 15, vendor_headers/): each family's mapping, what is refused
and what ignored, precedence, limits, the deletion of exactly their fields (property tests of
the parsers: test_vendor_headers_properties.py)."""

from __future__ import annotations

from email import message_from_bytes

import Milter
import pytest

from smtpapi_milter.cli import rewrite_message
from smtpapi_milter.config import parse_config
from smtpapi_milter.envelope import HeaderEdit
from smtpapi_milter.ids import IdGenerator
from smtpapi_milter.mta.milter import ACTIONS, SmtpapiMilter
from smtpapi_milter.mta.state import MilterState
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.policy import PolicySet
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.tokens import TokenCodec
from smtpapi_milter.vendor_headers import registry
from smtpapi_milter.vendor_headers.common import VendorSettings

from . import corpus
from . import vendor_examples as examples
from .harness.smtpapi import toml
from .oracle import TRACKED
from .test_milter_errors import Recorder, broken_clock, with_ids

CODEC = TokenCodec([("test", bytes(range(32)))])
ALL = list(registry.FAMILY_NAMES)


def pipeline(policies: PolicySet | None = None, **smtpapi) -> Pipeline:
    smtpapi.setdefault("accept_headers", ALL)
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    return Pipeline(config, policies, codec=CODEC)


def fields(text: bytes) -> list[tuple[str, bytes]]:
    out = []
    for line in text.split(b"\r\n"):
        name, _, value = line.partition(b":")
        out.append((name.decode(), value.lstrip(b" ")))
    return out


def read(text: bytes, accepted=ALL) -> registry.HeadersRead:
    return registry.read(fields(text), accepted)


def refused(text: bytes, accepted=ALL) -> str:
    with pytest.raises(SmtpReplyError) as info:
        read(text, accepted)
    assert (info.value.reply.code, info.value.reply.status) == ("550", "5.6.0")
    return info.value.reply.text


def run(extra: bytes, p: Pipeline | None = None, listener=None):
    """Rewrite the multipart example with ``extra`` headers: (output, tokens per part)."""
    message = corpus.wrap_html(examples.HTML, "8bit" if b"8bit" in extra else "base64", extra)
    out, result = rewrite_message(p or pipeline(), message, listener=listener)
    return out, result


def links_by_part(out: bytes) -> tuple[int, int]:
    """(tracked links in the HTML part, in the text part) of a base64 multipart output."""
    counts = {"text/html": 0, "text/plain": 0}
    for part in message_from_bytes(out).walk():
        if part.get_content_type() in counts:
            text = part.get_payload(decode=True).decode()
            counts[part.get_content_type()] = len(TRACKED.findall(text))
    return counts["text/html"], counts["text/plain"]


# --- each family's mapping ---------------------------------------------------------------------

MAPPINGS = [
    (
        b'X-SMTPAPI: {"category": "receipts"}',
        {"tags": ["receipts"]},
    ),
    (
        b'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": "0"}},'
        b' "opentrack": {"settings": {"enable": true}},'
        b' "bypass_list_management": {"settings": {"enable": 1}}}}',
        {"click_tracking": False, "open_tracking": True, "skip_suppression": True},
    ),
    (
        b'X-SMTPAPI: {"filters": {"clicktrack":'
        b' {"settings": {"enable": 1, "enable_text": false}}}}',
        {"click_tracking": True, "click_tracking_text": False},
    ),
    (
        b'X-SMTPAPI: {"asm_group_id": 42, "ip_pool": "p", "sub": {}, "to": [],'
        b' "filters": {"footer": {"settings": {"enable": 0}}, "dkim": {"settings":'
        b' {"domain": "example.com"}}}}',
        {},
    ),
    (
        b"X-Mailgun-Track: yes\r\nX-Mailgun-Track-Clicks: no",
        {"open_tracking": True, "click_tracking": False},
    ),
    (
        b"X-Mailgun-Track: NO\r\nX-Mailgun-Track-Opens: true",
        {"open_tracking": True, "click_tracking": False},
    ),
    (
        b"X-Mailgun-Track-Clicks: htmlonly\r\nX-Mailgun-Campaign-Id: spring",
        {"click_tracking": True, "click_tracking_text": False, "campaign_id": "spring"},
    ),
    (
        b"X-Mailgun-Dkim: yes\r\nX-Mailgun-Drop-Message: no\r\nX-Mailgun-Sending-Ip: 192.0.2.1",
        {},
    ),
    (
        b"X-PM-TrackLinks: textonly\r\nX-PM-TrackOpens: False",
        {
            "click_tracking": True,
            "click_tracking_html": False,
            "click_tracking_text": True,
            "open_tracking": False,
        },
    ),
    (
        b"X-PM-TrackLinks: None\r\nX-PM-Message-Stream: broadcast\r\nX-PM-KeepID: true",
        {"click_tracking": False},
    ),
    (
        b"X-PM-Tag: =?utf-8?q?caf=C3=A9?=\r\nX-PM-Metadata-Order-Id: =?utf-8?b?4oKsNQ==?=",
        {"tags": ["café"], "metadata": {"Order-Id": "€5"}},
    ),
]


@pytest.mark.parametrize(("text", "wanted"), MAPPINGS)
def test_each_family_maps_onto_the_x_msys_api_fields(text, wanted):
    settings = read(text).settings
    assert settings is not None
    for name in VendorSettings.__dataclass_fields__:
        if name != "family":
            assert getattr(settings, name) == wanted.get(name), name


def test_mailgun_variables_combine_and_tags_repeat():
    headers, expected = examples.FAMILIES["mailgun"]
    settings = read(headers).settings
    assert (tuple(settings.tags), settings.metadata) == expected


# --- refused, with the header named --------------------------------------------------------

REFUSED = [
    (b"X-SMTPAPI: {}\r\nX-SMTPAPI: {}", "message has more than one X-SMTPAPI header"),
    (b"X-SMTPAPI: [1]", "X-SMTPAPI must be of type 'json object'"),
    (b'X-SMTPAPI: {"x": NaN}', "X-SMTPAPI is not valid JSON: NaN is not JSON"),
    (
        b'X-SMTPAPI: {"category": [1]}',
        "X-SMTPAPI 'category' must be a string or a json array of strings",
    ),
    (b'X-SMTPAPI: {"unique_args": "a"}', "X-SMTPAPI 'unique_args' must be of type 'json object'"),
    (
        b'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": 2}}}}',
        "X-SMTPAPI 'filters.clicktrack.settings.enable' must be 0 or 1",
    ),
    (b'X-SMTPAPI: {"filters": []}', "X-SMTPAPI 'filters' must be of type 'json object'"),
    (  # found by the property test: the sender's filter name, quoted printable and short
        b'X-SMTPAPI: {"filters": {"a\\u0007\\u00e9": 1}}',
        "X-SMTPAPI 'filters.a\\x07\\xe9' must be of type 'json object'",
    ),
    (
        b'X-SMTPAPI: {"send_at": 1409348513}',
        "X-SMTPAPI 'send_at' is not supported here: mail goes out when it is received; "
        "schedule it before sending",
    ),
    (
        b'X-SMTPAPI: {"sub": {"-name-": ["Ben"]}}',
        "X-SMTPAPI 'sub' is not supported here: substitutions are not made; send each "
        "recipient's text already filled in",
    ),
    (
        b'X-SMTPAPI: {"filters": {"footer": {"settings": {"enable": 1, "text/plain": "Bye"}}}}',
        "X-SMTPAPI filter 'footer' is not supported here: it would change the message or its "
        "delivery; disable it",
    ),
    (
        b'X-SMTPAPI: {"filters": {"opentrack": {"settings": {"enable": 1, "replace": "%o%"}}}}',
        "X-SMTPAPI 'filters.opentrack.settings.replace' is not supported here: the open pixel "
        "goes at the end",
    ),
    (b"X-SMTPAPI: \xff", "X-SMTPAPI header must be ASCII (use \\u escapes or RFC 2047) or UTF-8"),
    (
        b"X-Mailgun-Track-Clicks: sometimes",
        "X-Mailgun-Track-Clicks must be one of yes, no, true, false, 1, 0, htmlonly, "
        "not 'sometimes'",
    ),
    (
        b"X-Mailgun-Track: yes\r\nX-Mailgun-Track: no",
        "message has more than one X-Mailgun-Track header",
    ),
    (b"X-Mailgun-Variables: [1, 2]", "X-Mailgun-Variables must be of type 'json object'"),
    (
        b"X-Mailgun-Drop-Message: yes",
        "X-Mailgun-Drop-Message header is not supported here: test mode (not delivering) is "
        "Mailgun's; this mail would go out",
    ),
    (
        b"X-Mailgun-Deliver-By: Thu, 13 Oct 2011 18:02:00 GMT",
        "X-Mailgun-Deliver-By header is not supported here: mail goes out when it is received; "
        "schedule it before sending",
    ),
    (
        b"X-PM-TrackLinks: Everywhere",
        "X-PM-TrackLinks must be one of None, HtmlAndText, HtmlOnly, TextOnly, not 'Everywhere'",
    ),
    (b"X-PM-TrackOpens: yes", "X-PM-TrackOpens must be one of true, false, not 'yes'"),
    (b"X-PM-Tag: a\r\nX-PM-Tag: b", "message has more than one X-PM-Tag header"),
    (
        b"X-PM-Metadata-color: blue\r\nX-PM-Metadata-Color: red",
        "message has more than one X-PM-Metadata-Color header",
    ),
    (b"X-PM-Metadata-: x", "X-PM-Metadata- header names no metadata key (X-PM-Metadata-<key>)"),
    (
        b"X-SMTPAPI: {}\r\nX-PM-Tag: a",
        "message has headers of two vendors, X-SMTPAPI and X-PM-Tag: use one vendor's headers",
    ),
]


@pytest.mark.parametrize(("text", "reply"), REFUSED)
def test_unusable_vendor_headers_are_refused_naming_the_header(text, reply):
    assert refused(text) == reply


def test_two_vendors_are_fine_when_only_one_is_accepted():
    text = b"X-Mailgun-Tag: news\r\nX-PM-Tag: other"
    got = read(text, ["postmark"])
    assert got.settings.tags == ["other"]
    assert got.edits == [HeaderEdit("X-PM-Tag", 1, None)]  # X-Mailgun-Tag stays as it is


def test_ignored_instructions_are_logged(info_logs):
    read(b'X-SMTPAPI: {"asm_group_id": 7, "unknown": 1}')
    read(b"X-Mailgun-Sending-Ip-Pool: pool1\r\nX-Mailgun-Require-TLS: no")
    read(b"X-PM-Message-Stream: outbound\r\nX-PM-Whatever: 1")
    assert [(e["header"], e["reason"]) for e in info_logs] == [
        ("X-SMTPAPI asm_group_id", registry.sendgrid.IGNORED["asm_group_id"]),
        ("X-SMTPAPI unknown", "not a field smtpapi-milter reads"),
        ("X-Mailgun-Sending-Ip-Pool", "the MTA chooses the sending address"),
        ("X-Mailgun-Require-TLS", "says no"),
        ("X-PM-Message-Stream", "message streams are Postmark's; this MTA has one"),
        ("X-PM-Whatever", "not a header smtpapi-milter reads"),
    ]


def test_many_unknown_fields_are_one_log_line(info_logs):
    read(b"\r\n".join(b"X-PM-Foo%d: x" % i for i in range(500)))
    read(b"X-SMTPAPI: {" + b", ".join(b'"k%d": 1' % i for i in range(500)) + b"}")
    assert [(e["header"].split(", ")[-2:], e["reason"]) for e in info_logs] == [
        (["X-PM-Foo9", "..."], "not a header smtpapi-milter reads"),
        (["X-SMTPAPI k9", "..."], "not a field smtpapi-milter reads"),
    ]


# --- deletion keeps every other byte ----------------------------------------------------------


def test_every_accepted_field_is_deleted_and_nothing_else():
    extra = (
        b"X-Mailgun-Tag: one\r\nX-Keep: between\r\nx-mailgun-tag: two\r\n"
        b'X-Mailgun-Variables: {"a":\r\n  1}\r\nX-MSYS-API: {"campaign_id": "c"}\r\n'
        b"X-Mailgun-Tag: three\r\nX-PM-Tag: not-accepted"
    )
    p = pipeline(accept_headers=["x-msys-api", "mailgun"])
    message = corpus.wrap_html(examples.HTML, "base64", extra)
    out, result = rewrite_message(p, message)
    assert result.header_edits == [
        HeaderEdit("X-MSYS-API", 1, None),
        HeaderEdit("X-Mailgun-Tag", 3, None),
        HeaderEdit("X-Mailgun-Tag", 2, None),
        HeaderEdit("X-Mailgun-Tag", 1, None),
        HeaderEdit("X-Mailgun-Variables", 1, None),
    ]
    kept = message.replace(extra, b"X-Keep: between\r\nX-PM-Tag: not-accepted")
    assert out == kept  # nothing tracked: the configuration tracks nothing, nor do they
    settings = result.copies[0].settings
    assert (settings.campaign_id, settings.tags, settings.metadata) == (
        "c",
        ("one", "two", "three"),
        {"a": 1},
    )


# --- which parts' links: the extension X-MSYS-API cannot express --------------------------------


@pytest.mark.parametrize(
    ("extra", "html_links", "text_links"),
    [
        (b"X-PM-TrackLinks: HtmlAndText", 2, 2),
        (b"X-PM-TrackLinks: HtmlOnly", 2, 0),
        (b"X-PM-TrackLinks: TextOnly", 0, 2),
        (b"X-PM-TrackLinks: None", 0, 0),
        (b"X-Mailgun-Track-Clicks: htmlonly", 2, 0),
        (b"X-Mailgun-Track-Clicks: yes", 2, 2),
        (b'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": 1}}}}', 2, 2),
        (
            b'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": 1,'
            b' "enable_text": false}}}}',
            2,
            0,
        ),
    ],
)
def test_which_parts_links_are_tracked(extra, html_links, text_links):
    out, _ = run(extra)
    assert links_by_part(out) == (html_links, text_links)


def test_text_only_follows_configuration_when_the_vendor_does_not_say():
    out, _ = run(b"X-Mailgun-Track-Clicks: yes", pipeline(click_tracking_text=False))
    assert links_by_part(out) == (2, 0)


# --- precedence: policy > X-MSYS-API > vendor > configuration ----------------------------------


def test_x_msys_api_wins_field_by_field_over_the_vendor():
    extra = (
        b'X-MSYS-API: {"tags": ["mine"], "options": {"click_tracking": false}}\r\n'
        b"X-PM-Tag: theirs\r\nX-PM-Metadata-k: v\r\nX-PM-TrackLinks: HtmlAndText\r\n"
        b"X-PM-TrackOpens: true"
    )
    out, result = run(extra)
    settings = result.copies[0].settings
    assert (settings.tags, settings.metadata) == (("mine",), {"k": "v"})
    assert (settings.click_tracking, settings.open_tracking) == (False, True)
    assert b"X-PM-" not in out and b"X-MSYS-API" not in out


def test_vendor_wins_over_configuration_and_policy_over_both(tmp_path):
    policy = tmp_path / "quiet.py"
    policy.write_text(
        "def validate_data_spool_each_rcpt(ctx):\n"
        "    ctx.set('smtpapi_open_tracking', '0')\n"
        "    ctx.set('smtpapi_tags', '[\"policy\"]')\n"
        "    assert ctx.xmsysapi is None  # policies see X-MSYS-API alone\n"
    )
    policy.chmod(0o644)
    extra = b"X-Mailgun-Track: yes\r\nX-Mailgun-Tag: vendor"
    _, result = run(extra, pipeline(open_tracking_enabled=False))
    assert result.copies[0].settings.open_tracking is True
    policies = PolicySet.load(str(tmp_path))
    _, result = run(extra, pipeline(policies, open_tracking_enabled=False))
    settings = result.copies[0].settings
    assert (settings.open_tracking, settings.click_tracking, settings.tags) == (
        False,
        True,
        ("policy",),
    )


def test_accept_headers_per_listener():
    p = pipeline(accept_headers=["x-msys-api"], listener={"apps": {"accept_headers": ["mailgun"]}})
    extra = b"X-Mailgun-Track: yes"
    out, result = run(extra, p)
    assert result.untracked is not None and extra in out and result.vendor_headers is None
    out, result = run(extra, p, listener="apps")
    assert result.untracked is None and extra not in out and result.vendor_headers == "mailgun"


# --- the same limits and wording as X-MSYS-API ---------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reply"),
    [
        (
            b'X-Mailgun-Variables: {"k": "' + b"v" * 193 + b'"}\r\nX-Mailgun-Track: yes',
            "smtpapi_metadata context is limited to 200 bytes",
        ),
        (
            b"X-PM-Metadata-k: " + b"v" * 193 + b"\r\nX-PM-TrackOpens: true",
            "smtpapi_metadata context is limited to 200 bytes",
        ),
        (
            b'X-SMTPAPI: {"unique_args": {"k": "' + b"v" * 193 + b'"}}',
            "smtpapi_metadata context is limited to 200 bytes",
        ),
        (
            b"X-Mailgun-Campaign-Id: " + b"c" * 65,
            "smtpapi_campaign_id context is limited to 64 bytes",
        ),
    ],
)
def test_limits_apply_with_the_x_msys_api_wording(extra, reply):
    with pytest.raises(SmtpReplyError) as info:
        run(extra)
    assert str(info.value.reply) == f"550 5.6.0 {reply}"


def test_tags_past_ten_are_dropped_as_for_x_msys_api():
    categories = ", ".join(f'"c{i}"' for i in range(12)).encode()
    _, result = run(b'X-SMTPAPI: {"category": [' + categories + b"]}")
    assert result.copies[0].settings.tags == tuple(f"c{i}" for i in range(10))


# --- failing open still removes them -----------------------------------------------------------


def test_on_error_accept_deletes_every_accepted_familys_fields(tmp_path):
    config = tmp_path / "smtpapi-milter.toml"
    sections = {
        "milter": {"on_error": "accept"},
        "policy": {"directory": str(tmp_path / "none")},
        "smtpapi": {"accept_headers": ["x-msys-api", "mailgun"]},
    }
    config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    state = with_ids(MilterState.load(str(config)), IdGenerator(0, broken_clock))
    try:
        milter = SmtpapiMilter(state)
        milter._ctx = recorder = Recorder()
        milter._actions, milter._protocol = ACTIONS, 0
        milter.connect("client.example", 2, ("127.0.0.1", 40000))
        milter.hello("client.example")
        milter.envfrom("<news@example.com>")
        milter.envrcpt("<jane@example.org>")
        for name, value in [
            ("From", b" news@example.com"),
            ("X-Mailgun-Tag", b" a"),
            ("X-PM-Tag", b" not accepted"),
            ("X-Mailgun-Tag", b" b"),
            ("X-Mailgun-Track", b" yes"),
            ("Content-Type", b" text/html; charset=utf-8"),
        ]:
            milter.header(name, value)
        milter.eoh()
        milter.body(examples.HTML)
        assert milter.eom() == Milter.ACCEPT  # the broken id clock: an internal error
        milter.close()
    finally:
        state.close()
    assert recorder.calls == [
        ("chgheader", "X-Mailgun-Tag", 2, None),
        ("chgheader", "X-Mailgun-Tag", 1, None),
        ("chgheader", "X-Mailgun-Track", 1, None),
    ]
