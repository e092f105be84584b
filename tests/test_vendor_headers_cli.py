"""Other vendors' headers through ``smtpapi-milter rewrite`` and ``check``, run as a user runs
them (SPEC 15): one message per vendor, with its documented example headers (vendor_examples)."""

from __future__ import annotations

import json

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.tokens import TokenCodec

from . import vendor_examples as examples
from .harness.smtpapi import RunningTracker
from .oracle import TRACKED, judge
from .test_cli import cli
from .test_tracker import events_of, get, rewrite, top_html, tracked

ALL = '["x-msys-api", "x-smtpapi", "mailgun", "postmark"]'


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "smtpapi-milter.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n'
        f"[smtpapi]\naccept_headers = {ALL}\n"
    )
    return path


def codec_of(config) -> TokenCodec:
    return TokenCodec.from_config(load_config(str(config)), create=False)


@pytest.mark.parametrize("family", sorted(examples.FAMILIES))
def test_rewrite_tracks_as_the_vendor_header_asks_and_removes_it(tmp_path, config, family):
    message = examples.message(family)
    (tmp_path / "in.eml").write_bytes(message)
    result = cli("rewrite", "--config", str(config), str(tmp_path / "in.eml"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Every vendor field gone; every other header byte as it was.
    expected_head = examples.header_block(examples.without_vendor_fields(message))
    assert examples.header_block(out) == expected_head
    codec = codec_of(config)
    report = judge(examples.without_vendor_fields(message), out, codec)
    assert (report.html_links, report.text_links, report.pixels) == (2, 2, 1)
    # A click on a tracked link records what the vendor header named.
    tags, metadata = examples.FAMILIES[family][1]
    text = out.replace(b"=\r\n", b"").decode()
    tokens = TRACKED.findall(text)
    assert len(tokens) == 4
    for token in tokens:
        data = codec.decode(token)
        assert (data.tags, data.metadata, data.rcpt_to) == (tags, metadata, "jane.doe@example.org")


def test_families_not_accepted_pass_through_untouched(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n')
    for family in examples.FAMILIES:
        message = examples.message(family)
        (tmp_path / "in.eml").write_bytes(message)
        result = cli("rewrite", "--config", str(config), str(tmp_path / "in.eml"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == message  # default: only X-MSYS-API is read, nothing tracked
        assert b"untracked (no_tracking)" in result.stderr


REFUSALS = [
    (
        b'X-SMTPAPI: {"category": "x",',
        "550 5.6.0 X-SMTPAPI is not valid JSON: Expecting property name enclosed in double quotes",
    ),
    (
        b"X-Mailgun-Variables: {my_message_id: 123}",
        "550 5.6.0 X-Mailgun-Variables is not valid JSON: "
        "Expecting property name enclosed in double quotes",
    ),
    (
        b"X-Mailgun-Tag: news\r\nX-PM-TrackOpens: true",
        "550 5.6.0 message has headers of two vendors, X-Mailgun-Tag and X-PM-TrackOpens: "
        "use one vendor's headers",
    ),
    (
        b'X-SMTPAPI: {"to": ["a@example.org", "b@example.org"]}',
        "550 5.6.0 X-SMTPAPI 'to' is not supported here: it lists recipients; "
        "give each one in RCPT TO",
    ),
]


@pytest.mark.parametrize(("header", "reply"), REFUSALS)
def test_rewrite_refuses_what_cannot_be_used_naming_the_header(tmp_path, config, header, reply):
    (tmp_path / "bad.eml").write_bytes(examples.corpus.wrap_html(examples.HTML, "8bit", header))
    result = cli("rewrite", "--config", str(config), str(tmp_path / "bad.eml"))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"{tmp_path / 'bad.eml'}: {reply}"
    assert result.stdout == b""


def test_check_names_file_key_and_value_of_an_unknown_family(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'state_dir = "{tmp_path}"\n[smtpapi]\naccept_headers = ["x-msys-api", "mailgun"]\n'
        '[smtpapi.listener.apps]\naccept_headers = ["sendgrid"]\n'
    )
    result = cli("check", "--config", str(path))
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"smtpapi-milter: {path}: 'smtpapi.listener.apps.accept_headers[0]' 'sendgrid' is not a "
        "header family (one of 'x-msys-api', 'x-smtpapi', 'mailgun', 'postmark')"
    )


def test_check_prints_the_accepted_families(tmp_path, config):
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert 'accept_headers = ["x-msys-api", "x-smtpapi", "mailgun", "postmark"]' in (
        result.stdout.decode()
    )


def test_a_click_through_the_real_tracker_records_the_vendor_tags_and_metadata(tmp_path):
    """Per family: rewrite with the tracker's configuration, click each tracked link of the
    HTML part, and read the click events back from the admin API."""
    tracker = RunningTracker(tmp_path, smtpapi={"accept_headers": json.loads(ALL)})
    with tracker:
        for family in sorted(examples.FAMILIES):
            rcpt = f"{family}-reader@example.org"
            out = rewrite(tracker, examples.message(family), rcpt)
            clicks = tracked(tracker, top_html(out), "c")
            assert len(clicks) == 2, family
            for path in clicks:
                assert get(tracker, path)[0] == 302
            recorded = events_of(tracker, rcpt, "click")
            tags, metadata = examples.FAMILIES[family][1]
            assert len(recorded) == 2, family
            for event in recorded:
                assert (event["rcpt_tags"], event["rcpt_meta"]) == (list(tags), metadata)
