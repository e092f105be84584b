"""Return-path tokens, the milter's return paths, and ``bounce-in``'s exit statuses (SPEC 13).

The Postfix end-to-end path is tests/test_bounce_in_postfix.py; the classification of real
bounces and complaints, tests/test_bounce_corpus.py.
"""

from __future__ import annotations

import base64
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.bounces_in.classify import classify
from smtpapi_milter.bounces_in.events import build_events
from smtpapi_milter.bounces_in.return_path import (
    LOCAL_PART_LIMIT,
    ForgedReturnPath,
    ReturnPaths,
    ReturnPathToken,
)
from smtpapi_milter.config import ConfigError, parse_config
from smtpapi_milter.delivery.bounce_class import BounceClassifier
from smtpapi_milter.events.model import EVENT_CLASSES, envelope
from smtpapi_milter.events.store import open_store
from smtpapi_milter.ids import message_id
from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.policy import PolicySet
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.tokens import TokenCodec

from .harness.smtpapi import ROOT
from .test_list_unsubscribe import CODEC, message, run

KEY = bytes(range(32))
PATHS = ReturnPaths.from_codec(TokenCodec([("test", KEY)]))
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
CLASSIFIER = BounceClassifier.load()
# Pieces of reports, so generated messages reach the report parsers and not only the header's.
REPORT_PIECES = [
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n",
    "\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n",
    "\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\n",
    "\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n",
    "\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "Final-Recipient: rfc822; a@b.example\r\n",
    "Action: failed\r\n",
    "Status: 5.1.1\r\n",
    "Diagnostic-Code: smtp; 550 5.1.1 <a@b.example> no\r\n",
    "Feedback-Type: abuse\r\n",
    "Auto-Submitted: auto-replied\r\n",
    "From: MAILER-DAEMON@x.example\r\n",
    "Subject: Undeliverable\r\n",
    "\r\n--b--\r\n",
    "\r\n\r\n",
]

tokens = st.builds(
    ReturnPathToken,
    transmission_id=st.integers(0, (1 << 63) - 1).map(str),
    index=st.integers(0, 0xFFFF),
    shared=st.booleans(),
)


@given(tokens)
def test_round_trip_in_any_case_and_within_the_local_part_limit(token):
    local = PATHS.local_part(token)
    assert len(local.encode()) <= LOCAL_PART_LIMIT
    assert local == local.lower() and local.isascii()
    for spelling in (local, local.upper(), local.title()):  # MTAs that change the case
        assert PATHS.verify(spelling) == token
    assert PATHS.find(f"Final-Recipient: rfc822; {local.upper()}@bounces.example") == token


@given(tokens, st.integers(7, 43), st.sampled_from(ALPHABET))
def test_a_changed_character_never_verifies(token, position, replacement):
    local = PATHS.local_part(token)
    if local[position] == replacement:
        replacement = ALPHABET[(ALPHABET.index(replacement) + 1) % 32]
    forged = local[:position] + replacement + local[position + 1 :]
    with pytest.raises(ForgedReturnPath):
        PATHS.verify(forged)


@given(tokens, st.binary(min_size=32, max_size=32))
def test_another_key_never_verifies(token, other_key):
    if other_key == KEY:
        return
    forger = ReturnPaths.from_codec(TokenCodec([("x", other_key)]))
    with pytest.raises(ForgedReturnPath):
        PATHS.verify(forger.local_part(token))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=3000)
    | st.builds(
        lambda parts: "".join(parts).encode("utf-8", "surrogateescape"),
        st.lists(st.sampled_from(REPORT_PIECES) | st.text(max_size=40), max_size=30),
    )
)
def test_the_classifier_never_fails_on_any_message(raw):
    report = classify(raw, CLASSIFIER)
    assert report.kind in ("dsn", "arf", "bounce", "auto_reply", "unknown")
    for event in build_events(report, ReturnPathToken("1", 0, True), None, 0, "k"):
        assert event["type"] in ("out_of_band", "spam_complaint")


def test_a_huge_report_costs_bounded_time():
    """A bounce (no DSN: flufl.bounce's heuristics read it) returning a 20 MB message of 5000
    parts is classified from its first MiB: 7.5 s of CPU when the whole message was read."""
    part = "--b\r\nContent-Type: text/plain\r\n\r\n" + "x" * 4000 + " {}\r\n"
    raw = (
        "From: MAILER-DAEMON@mx.example\r\nSubject: Undeliverable mail\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
        "<gone@b.example>: 550 5.1.1 user unknown\r\n"
        + "".join(part.format(i) for i in range(5000))
        + "--b--\r\n"
    ).encode()
    started = resource.getrusage(resource.RUSAGE_SELF)
    report = classify(raw, CLASSIFIER)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ended.ru_utime - started.ru_utime + ended.ru_stime - started.ru_stime
    assert report.kind == "bounce" and report.failures[0].bounce_class == 10
    assert len(raw) > 20_000_000 and cpu < 2.5


@given(st.text(max_size=80))
def test_arbitrary_text_never_verifies(text):
    with pytest.raises(ForgedReturnPath):
        PATHS.verify(text)


def test_rotated_keys_keep_old_addresses_verifying():
    old = ReturnPaths.from_codec(TokenCodec([("old", KEY)]))
    rotated = ReturnPaths.from_codec(TokenCodec([("new", bytes(32)), ("old", KEY)]))
    token = ReturnPathToken("123456789", 2, False)
    assert rotated.verify(old.local_part(token)) == token


def test_sub_key_is_not_the_link_key():
    (derived,) = TokenCodec([("test", KEY)]).derived_keys(b"smtpapi-milter return-path v1")
    assert derived != KEY and len(derived) == 32


# --- the milter's side -------------------------------------------------------------------


def test_each_copy_gets_a_return_path_naming_its_message():
    result = run(
        ["a@example.org", "b@example.org"],
        message(),
        bounce_domain="bounces.example.com",
        multi_recipient="split",
        reinject_to="127.0.0.1:10026",
    )
    paths = ReturnPaths.from_codec(CODEC)
    for index, copy in enumerate(result.copies):
        local, _, domain = copy.return_path.partition("@")
        token = paths.verify(local)
        assert domain == "bounces.example.com" and not token.shared
        assert message_id(token.transmission_id, token.index) == copy.message_id
        assert copy.injection["msg_from"] == "news@example.com"  # the original sender
        assert token.index == index


def test_shared_body_gets_a_shared_return_path_and_default_is_off():
    [copy] = run(["a@x.org", "b@x.org"], message(), bounce_domain="b.example").copies
    assert ReturnPaths.from_codec(CODEC).verify(copy.return_path.split("@")[0]).shared
    [copy] = run(["a@x.org"], message()).copies
    assert copy.return_path == ""


def with_policy(tmp_path: Path, source: str, sender: str = "news@example.com", **smtpapi):
    policies = tmp_path / "policies"
    policies.mkdir(parents=True)
    (policies / "p.py").write_text(source)
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    session = Pipeline(config, PolicySet.load(policies), codec=CODEC).session()
    session.connect("127.0.0.1")
    session.mail_from(sender)
    session.rcpt("jane@example.org")
    parsed = parse_message_file(message())
    return session.end_of_message(parsed.headers, parsed.body)


def test_policy_sets_or_clears_the_bounce_domain_per_message(tmp_path):
    on = "def validate_data_spool(ctx):\n    ctx.set('smtpapi_bounce_domain', 'vip.example')\n"
    [copy] = with_policy(tmp_path / "on", on).copies
    assert copy.return_path.endswith("@vip.example")
    off = "def validate_data_spool(ctx):\n    ctx.set('smtpapi_bounce_domain', '')\n"
    [copy] = with_policy(tmp_path / "off", off, bounce_domain="b.example").copies
    assert copy.return_path == ""
    bad = "def validate_data_spool(ctx):\n    ctx.set('smtpapi_bounce_domain', 'a@b')\n"
    with pytest.raises(SmtpReplyError, match="smtpapi_bounce_domain"):
        with_policy(tmp_path / "bad", bad)


def test_the_null_sender_keeps_its_envelope_sender(tmp_path):
    """A message from <> is itself a bounce: nothing may answer it, so no return path."""
    [copy] = with_policy(tmp_path, "", sender="", bounce_domain="b.example").copies
    assert copy.return_path == "" and copy.injection is not None


def test_bad_bounce_domain_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"'smtpapi.listener.out.bounce_domain' 'a@b'"):
        parse_config({"smtpapi": {"listener": {"out": {"bounce_domain": "a@b"}}}}, "f.toml")


def test_new_types_are_message_events():
    for kind in ("out_of_band", "spam_complaint"):
        assert EVENT_CLASSES[kind] == "message_event"
        assert list(envelope({"type": kind})["msys"]) == ["message_event"]


# --- bounce-in's exit statuses -----------------------------------------------------------

DSN = (
    "From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
    "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mx.example.org\r\n\r\n"
    "Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: User unknown\r\n"
    "--b--\r\n"
)


def write_config(tmp_path: Path, store: str = "") -> Path:
    key = base64.urlsafe_b64encode(KEY).decode().rstrip("=")
    path = tmp_path / "smtpapi-milter.toml"
    events = f'\n[events]\nstore = "{store}"\n' if store else ""
    path.write_text(
        f'state_dir = "{tmp_path}"\n[engagement_tracker]\nkeys = ["test:{key}"]\n{events}'
    )
    return path


def bounce_in(config: Path, report: str, recipient: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "bounce-in", "--config", str(config)]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [*argv, recipient], input=report.encode(), capture_output=True, env=env, timeout=60
    )


def an_address() -> str:
    return PATHS.address(ReturnPathToken("987654321987", 0, False), "bounces.example.com")


def stored(tmp_path: Path) -> list[dict]:
    store = open_store(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    try:
        return store.query()
    finally:
        store.close()


def test_store_missing_or_down_exits_75_so_the_mta_retries(tmp_path):
    address = an_address()
    missing = bounce_in(write_config(tmp_path), DSN.format(to=address), address)
    assert missing.returncode == 75 and b"event store unavailable" in missing.stderr
    down = write_config(tmp_path, "postgresql://smtpapi@127.0.0.1:1/events?connect_timeout=2")
    result = bounce_in(down, DSN.format(to=address), address)
    assert result.returncode == 75, result.stderr


def test_forged_or_missing_token_is_dropped_with_exit_0(tmp_path):
    open_store(f"sqlite:///{tmp_path / 'events.sqlite3'}").close()
    config = write_config(tmp_path)
    address = an_address()
    forged = address[:20] + ("a" if address[20] != "a" else "b") + address[21:]
    result = bounce_in(config, DSN.format(to=forged), forged)
    assert result.returncode == 0 and b"forged" in result.stderr
    result = bounce_in(config, DSN.format(to="someone@example.com"), "someone@example.com")
    assert result.returncode == 0 and b"no return-path token" in result.stderr
    assert stored(tmp_path) == []
    # The genuine address is stored, joined to nothing (no injection here) but named; as
    # Sendmail's $u gives it, the local part alone.
    result = bounce_in(config, DSN.format(to=address), address.partition("@")[0])
    assert result.returncode == 0, result.stderr
    (event,) = stored(tmp_path)
    assert (event["type"], event["bounce_class"], event["rcpt_to"]) == (
        "out_of_band",
        "10",
        "gone@example.org",
    )
    assert event["transmission_id"] == "987654321987"
    assert abs(int(event["timestamp"]) - time.time()) < 60
