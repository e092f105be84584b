"""RFC 8058 List-Unsubscribe headers (SPEC 14): what `rewrite` writes, as a user runs it.

Through the real CLI where the item is the command's output; the pipeline in-process for
what the command line cannot express (several recipients in one transaction, the injection
event of a copy that tracks nothing).
"""

from __future__ import annotations

import json
import re
from email import message_from_bytes
from pathlib import Path

import pytest

from smtpapi_milter.config import load_config, parse_config
from smtpapi_milter.envelope import HeaderEdit
from smtpapi_milter.list_unsubscribe import header_edits
from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.tokens import TokenCodec

from .test_cli import cli

HTML = b'<html><body><a href="https://example.com/sale">Sale</a></body></html>\r\n'
UNSUB_URL = re.compile(rb"<http://localhost:8080/u/([A-Za-z0-9_-]+)>")


def message(extra: bytes = b"", options: dict | None = None) -> bytes:
    api = {"campaign_id": "spring", "tags": ["news"], "metadata": {"segment": "vip"}}
    api["options"] = {"click_tracking": True, **(options or {})}
    return (
        b"From: News <news@example.com>\r\nTo: jane@example.org\r\nSubject: Sale\r\n"
        b"X-MSYS-API: " + json.dumps(api).encode() + b"\r\n" + extra + b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + HTML
    )


@pytest.fixture()
def config(tmp_path) -> Path:
    return write_config(tmp_path, "list_unsubscribe = true\n")


def write_config(tmp_path: Path, smtpapi: str) -> Path:
    path = tmp_path / "smtpapi-milter.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path / "policies"}"\n'
        f"[smtpapi]\n{smtpapi}"
    )
    (tmp_path / "policies").mkdir(exist_ok=True)
    return path


def rewrite(config: Path, data: bytes) -> tuple[bytes, str]:
    result = cli("rewrite", "--config", str(config), "-", stdin=data)
    assert result.returncode in (0, 3), result.stderr
    return result.stdout, result.stderr.decode()


def fields(out: bytes, name: str) -> list[str]:
    return message_from_bytes(out).get_all(name) or []


def test_rewrite_adds_both_headers_with_a_token_bound_to_recipient_and_message(config):
    out, _ = rewrite(config, message())
    [value] = fields(out, "List-Unsubscribe")
    assert fields(out, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    [token] = UNSUB_URL.fullmatch(value.encode()).groups()
    data = TokenCodec.from_config(load_config(str(config)), create=False).decode(token.decode())
    assert data.kind == "unsubscribe" and data.rcpt_to == "jane@example.org"
    assert data.campaign_id == "spring" and data.tags == ("news",)
    assert data.metadata == {"segment": "vip"} and data.message_id and data.transmission_id
    # The same message's click links name the same transmission.
    click = re.search(rb"http://localhost:8080/c/([A-Za-z0-9_-]+)", out).group(1).decode()
    codec = TokenCodec.from_config(load_config(str(config)), create=False)
    assert codec.decode(click).message_id == data.message_id
    assert data.expires == data.injection_time + 31536000  # the click links' expiry


def test_sender_entries_are_kept_in_one_header_and_post_is_not_duplicated(config):
    sender = (
        b"List-Unsubscribe: <mailto:leave@example.com?subject=unsubscribe>,\r\n"
        b"  <https://example.com/unsubscribe?u=1> (the sender's own)\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    )
    out, _ = rewrite(config, message(sender))
    assert out.count(b"List-Unsubscribe:") == 1 and out.count(b"List-Unsubscribe-Post:") == 1
    [value] = fields(out, "List-Unsubscribe")
    entries = [e.strip() for e in value.split(",")]
    assert UNSUB_URL.fullmatch(entries[0].encode())  # ours first: one-click comes to us
    assert entries[1:] == [
        "<mailto:leave@example.com?subject=unsubscribe>",
        "<https://example.com/unsubscribe?u=1>",
    ]
    assert fields(out, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


def test_transactional_mail_gets_neither_header(config):
    out, _ = rewrite(config, message(options={"transactional": True}))
    assert b"List-Unsubscribe" not in out
    assert b"localhost:8080/c/" in out  # still click-tracked: only the headers are exempt
    out, _ = rewrite(config, message(options={"transactional": False}))
    assert len(fields(out, "List-Unsubscribe")) == 1


def test_transactional_from_policy_beats_the_header(tmp_path, config):
    (tmp_path / "policies" / "t.py").write_text(
        "def validate_data_spool_each_rcpt(ctx):\n    ctx.set('smtpapi_transactional', '1')\n"
    )
    out, _ = rewrite(config, message(options={"transactional": False}))
    assert b"List-Unsubscribe" not in out


def test_off_by_default_and_policy_turns_it_on(tmp_path):
    config = write_config(tmp_path, "")
    out, _ = rewrite(config, message())
    assert b"List-Unsubscribe" not in out
    (tmp_path / "policies" / "u.py").write_text(
        "def validate_data_spool(ctx):\n    ctx.set('smtpapi_list_unsubscribe', 'true')\n"
    )
    out, _ = rewrite(config, message())
    assert len(fields(out, "List-Unsubscribe")) == 1


def test_bad_values_are_refused_naming_them(tmp_path, config):
    result = cli(
        "rewrite", "--config", str(config), "-", stdin=message(options={"transactional": "yes"})
    )
    assert result.returncode != 0
    assert b"550 5.6.0 X-MSYS-API 'options.transactional' must be of type 'boolean'" in (
        result.stdout + result.stderr
    )
    bad = message(options={"skip_suppression": 1})
    result = cli("rewrite", "--config", str(config), "-", stdin=bad)
    assert b"'options.skip_suppression' must be of type 'boolean'" in result.stdout + result.stderr
    (tmp_path / "policies" / "u.py").write_text(
        "def validate_data_spool(ctx):\n    ctx.set('smtpapi_list_unsubscribe', 'maybe')\n"
    )
    result = cli("rewrite", "--config", str(config), "-", stdin=message())
    assert b"smtpapi_list_unsubscribe context must be 1, 0, true or false" in (
        result.stdout + result.stderr
    )


def test_per_listener_override(tmp_path):
    config = parse_config(
        {"smtpapi": {"listener": {"bulk": {"list_unsubscribe": True}}}}, "inline.toml"
    ).smtpapi
    assert config.for_listener("bulk").list_unsubscribe
    assert not config.for_listener("other").list_unsubscribe


# --- the pipeline in-process: what the command line cannot ask for --------------------------

CODEC = TokenCodec([("test", bytes(range(32)))])


def run(recipients: list[str], data: bytes, **smtpapi):
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    session = Pipeline(config, codec=CODEC).session()
    session.connect("127.0.0.1")
    session.mail_from("news@example.com")
    for rcpt in recipients:
        session.rcpt(rcpt)
    parsed = parse_message_file(data)
    return session.end_of_message(parsed.headers, parsed.body, shared=session.shares_body())


def names(edits: list[HeaderEdit]) -> list[str]:
    return [e.name for e in edits]


def test_shared_body_gets_no_list_unsubscribe():
    """Two recipients, one body (auto without re-injection): no recipient to bind to."""
    result = run(["a@example.org", "b@example.org"], message(), list_unsubscribe=True)
    [copy] = result.copies
    assert copy.recipient is None and "List-Unsubscribe" not in names(copy.header_edits)


def test_split_copies_get_their_own_token():
    result = run(
        ["a@example.org", "b@example.org"],
        message(),
        list_unsubscribe=True,
        multi_recipient="split",
        reinject_to="127.0.0.1:10026",
    )
    urls = [e.value for c in result.copies for e in c.header_edits if e.name == "List-Unsubscribe"]
    assert len(urls) == 2 and urls[0] != urls[1]
    bound = [CODEC.decode(UNSUB_URL.fullmatch(u).group(1).decode()).rcpt_to for u in urls]
    assert bound == ["a@example.org", "b@example.org"]


def test_untracked_mail_still_offers_unsubscribe_and_records_its_injection():
    data = message(options={"click_tracking": False})
    [copy] = run(["a@example.org"], data, list_unsubscribe=True).copies
    assert "List-Unsubscribe" in names(copy.header_edits) and copy.body is None
    assert copy.injection is not None and copy.injection["message_id"] == copy.message_id


def test_dkim_signed_mail_is_left_alone():
    signed = message(b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=from; b=x\r\n")
    [copy] = run(["a@example.org"], signed, list_unsubscribe=True).copies
    assert "List-Unsubscribe" not in names(copy.header_edits)
    [copy] = run(["a@example.org"], signed, list_unsubscribe=True, track_dkim_signed=True).copies
    assert "List-Unsubscribe" in names(copy.header_edits)


def test_several_sender_headers_become_one_and_a_long_value_folds_in_the_files_line_ends():
    long = b"<https://example.com/" + b"x" * 990 + b">"
    headers = [
        ("List-Unsubscribe", b"<mailto:a@example.com>"),
        ("list-unsubscribe", long),
        ("List-Unsubscribe-Post", b"List-Unsubscribe=Something-Else"),
    ]
    edits = header_edits(headers, "https://t.example/u/TOKEN")
    assert [(e.name, e.index) for e in edits] == [
        ("List-Unsubscribe", 2),
        ("List-Unsubscribe", 1),
        ("List-Unsubscribe-Post", 1),
    ]
    assert edits[0].value is None and edits[2].value == b"List-Unsubscribe=One-Click"
    assert edits[1].value == (b"<https://t.example/u/TOKEN>,\n <mailto:a@example.com>,\n " + long)
    data = b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers) + b"\r\nbody\r\n"
    out = parse_message_file(data).to_bytes(edits)
    assert b"\n" not in out.replace(b"\r\n", b"")  # no bare line feed in a CRLF file
    assert out.lower().count(b"list-unsubscribe:") == 1
