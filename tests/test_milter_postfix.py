"""The milter inside a real Postfix, driven over SMTP, delivering to a capture server.

Every test starts its own private Postfix (smtpd_milters pointing at our milter, relaying
to a capture server) and our milter as a real process, and stops both.
"""

from __future__ import annotations

import re
import smtplib
from email import message_from_bytes

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.ports import free_port
from smtpapi_milter.sandbox.postfix import PrivatePostfix
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED, judge

HTML = (
    b"<html><body><p>Caf\xc3\xa9 news</p>"
    b'<a href="https://example.com/a?x=1&amp;y=2">a</a>'
    b'<a href="https://example.com/b">b</a></body></html>\r\n'
)
FOLDED = (
    b'X-MSYS-API: {"campaign_id": "folded", "tags": ["t1"],\r\n'
    b'   "options": {"open_tracking": true,\r\n'
    b'   "click_tracking": true}}'
)


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def mta(milter: RunningMilter, capture: CaptureServer, **kwargs) -> PrivatePostfix:
    return PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port, **kwargs)


def codec_of(milter: RunningMilter) -> TokenCodec:
    return TokenCodec.from_config(load_config(str(milter.config_path)), create=False)


def send(
    port: int, message: bytes, rcpts=("jane.doe@example.org",), sender="news@example.com"
) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(sender, list(rcpts), message)


def without_received(data: bytes) -> bytes:
    """The message as the sender wrote it: drop the Received fields Postfix put on top."""
    return re.sub(rb"\AReceived:.*?\r\n(?![ \t])", b"", data, count=1, flags=re.S)


def html_of(data: bytes) -> str:
    for part in message_from_bytes(data).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode("utf-8")
    raise AssertionError("no html part")


def test_folded_tracked_message_delivered_faithfully(tmp_path, capture):
    message = corpus.wrap_html(HTML, "quoted-printable", FOLDED)
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, message)
        (delivered,) = capture.wait_for(1, timeout=30)
        codec = codec_of(milter)
        report = judge(message, without_received(delivered.data), codec)
        assert (report.html_links, report.pixels) == (2, 1)
        assert b"X-MSYS-API" not in delivered.data
        line = milter.wait_for_log("message")[-1]
        assert line["verdict"] == "accept" and line["links"] >= 2 and line["queue_id"]
        data = codec.decode(TRACKED.search(html_of(delivered.data)).group(1))
        assert (data.campaign_id, data.tags, data.rcpt_to) == (
            "folded",
            ("t1",),
            "jane.doe@example.org",
        )


REJECTIONS = [
    (
        b'X-MSYS-API: {"metadata": ["x"]}',
        "5.6.0 X-MSYS-API 'metadata' must be of type 'json object'",
    ),
    (
        b'X-MSYS-API: {"options": {"open_tracking": "false"}}',
        "5.6.0 X-MSYS-API 'options.open_tracking' must be of type 'boolean'",
    ),
    (
        b'X-MSYS-API: {"campaign_id": "' + b"c" * 65 + b'"}',
        "5.6.0 smtpapi_campaign_id context is limited to 64 bytes",
    ),
    (
        b'X-MSYS-API: {"metadata": {"k": "' + b"v" * 193 + b'"}}',
        "5.6.0 smtpapi_metadata context is limited to 200 bytes",
    ),
    (b"X-MSYS-API: {not json", "5.6.0 X-MSYS-API is not valid JSON"),
    (b'X-MSYS-API: {"campaign_id": "\xe9t\xe9"}', "5.6.0 X-MSYS-API header must be ASCII"),
    (b"X-MSYS-API: {}\r\nX-MSYS-API: {}", "5.6.0 message has more than one X-MSYS-API header"),
]


def test_documented_replies_reach_the_client_verbatim(tmp_path, capture):
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        for header, text in REJECTIONS:
            with pytest.raises(smtplib.SMTPDataError) as info:
                send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", header))
            assert info.value.smtp_code == 550, (header, info.value)
            assert info.value.smtp_error.decode().startswith(text), info.value.smtp_error
        good = corpus.wrap_html(
            HTML, "8bit", b"X-MSYS-API: =?utf-8?B?eyJjYW1wYWlnbl9pZCI6ICJjYWbDqSJ9?="
        )
        send(postfix.smtp_port, good)  # RFC 2047-encoded header accepted
        (delivered,) = capture.wait_for(1, timeout=30)
        assert b"X-MSYS-API" not in delivered.data


def test_policy_turns_the_pixel_off_for_one_recipient(tmp_path, capture):
    milter = RunningMilter(tmp_path)
    milter.write_policy(
        "quiet.py",
        (
            "def validate_data_spool_each_rcpt(ctx):\n"
            "    if ctx.recipient == 'quiet@example.org':\n"
            "        ctx.set('smtpapi_open_tracking', '0')\n"
        ),
    )
    message = corpus.wrap_html(HTML, "base64")
    with milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, message, ["loud@example.org"])
        send(postfix.smtp_port, message, ["quiet@example.org"])
        delivered = {m.rcpt_tos[0]: m for m in capture.wait_for(2, timeout=30)}
    assert "/o/" in html_of(delivered["loud@example.org"].data)
    quiet = html_of(delivered["quiet@example.org"].data)
    assert "/o/" not in quiet and "/c/" in quiet


def test_second_recipient_deferred_then_tracked_in_its_own_transaction(tmp_path, capture):
    message = corpus.wrap_html(HTML, "quoted-printable")
    with (
        RunningMilter(tmp_path, smtpapi={"multi_recipient": "defer"}) as milter,
        mta(milter, capture) as postfix,
    ):
        refused = send(postfix.smtp_port, message, ["a@example.org", "b@example.org"])
        assert list(refused) == ["b@example.org"]
        code, text = refused["b@example.org"]
        assert (code, text[:5]) == (452, b"4.5.3")
        send(postfix.smtp_port, message, ["b@example.org"])  # what a client does next
        delivered = capture.wait_for(2, timeout=30)
        codec = codec_of(milter)
    for copy in delivered:
        (rcpt,) = copy.rcpt_tos
        token = TRACKED.search(html_of(copy.data)).group(1)
        assert codec.decode(token).rcpt_to == rcpt


@pytest.mark.parametrize("mode", ["split", "auto"])
def test_split_delivers_one_personalised_copy_per_recipient(tmp_path, capture, mode):
    # "auto" (the default) splits as soon as the operator names the re-injection listener.
    reinject_port = free_port()
    milter = RunningMilter(
        tmp_path, smtpapi={"multi_recipient": mode, "reinject_to": f"127.0.0.1:{reinject_port}"}
    )
    # The re-injection listener is the same Postfix without the milter, as in production.
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    message = corpus.wrap_html(HTML, "quoted-printable")
    rcpts = ["one@example.org", "two@example.org", "three@example.org"]
    with milter, mta(milter, capture, extra_master_cf=listener) as postfix:
        assert send(postfix.smtp_port, message, rcpts) == {}
        delivered = capture.wait_for(3, timeout=60)
        codec = codec_of(milter)
    seen = {}
    for copy in delivered:
        (rcpt,) = copy.rcpt_tos
        tokens = {codec.decode(t).rcpt_to for t in TRACKED.findall(html_of(copy.data))}
        seen[rcpt] = tokens
    assert seen == {r: {r} for r in rcpts}


def test_default_config_never_refuses_a_recipient_of_a_plain_smtplib_client(tmp_path, capture):
    # smtplib.sendmail (like swaks and most application mailers) reports a 452 recipient as
    # refused and never sends to it: the default must deliver to everyone in one go.
    message = corpus.wrap_html(HTML, "quoted-printable")
    rcpts = ["one@example.org", "two@example.org", "three@example.org"]
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        assert send(postfix.smtp_port, message, rcpts) == {}
        delivered = capture.wait_for(1, timeout=30)
        codec = codec_of(milter)
    assert sorted(r for m in delivered for r in m.rcpt_tos) == sorted(rcpts)
    # Without a re-injection listener that is one shared body: its links name no recipient.
    for copy in delivered:
        assert {codec.decode(t).rcpt_to for t in TRACKED.findall(html_of(copy.data))} == {""}


def test_no_header_and_default_config_passes_byte_identical(tmp_path, capture):
    message = corpus.wrap_html(HTML, "quoted-printable", b"")
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, message)
        (delivered,) = capture.wait_for(1, timeout=30)
    assert without_received(delivered.data) == message


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_unreachable_event_store_tempfails_and_keeps_the_mail(tmp_path, capture, on_error):
    # Even failing open on errors never means accepting a tracked message it cannot record.
    milter = RunningMilter(
        tmp_path,
        events={"store": "postgresql://127.0.0.1:1/events"},
        milter={"on_error": on_error},
    )
    with milter, mta(milter, capture) as postfix:
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit"))
        assert info.value.smtp_code == 451
        assert b"4.3.0" in info.value.smtp_error
        assert postfix.queue_ids() == []  # not accepted, so nothing to lose: the client retries
        # Untracked mail too: its recipients are checked against the suppression list, which
        # is in the store (tests/test_suppression_postfix.py).
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", b""))
        assert info.value.smtp_code == 451 and postfix.queue_ids() == []


def test_broken_policy_on_sighup_keeps_the_old_set(tmp_path, capture):
    milter = RunningMilter(tmp_path)
    policy = "def validate_data_spool(ctx):\n    ctx.set('smtpapi_campaign_id', '{}')\n"
    milter.write_policy("campaign.py", policy.format("v1"))
    message = corpus.wrap_html(HTML, "8bit")
    with milter, mta(milter, capture) as postfix:
        codec = codec_of(milter)

        def campaign_of_next_message() -> str:
            capture.clear()
            send(postfix.smtp_port, message)
            (copy,) = capture.wait_for(1, timeout=30)
            return codec.decode(TRACKED.search(html_of(copy.data)).group(1)).campaign_id

        assert campaign_of_next_message() == "v1"
        milter.write_policy("campaign.py", "def validate_data_spool(ctx)\n")  # syntax error
        milter.reload()
        milter.wait_for_log("reload refused, keeping the running configuration")
        assert campaign_of_next_message() == "v1"
        milter.write_policy("campaign.py", policy.format("v2"))
        milter.reload()
        milter.wait_for_log("reloaded")
        assert campaign_of_next_message() == "v2"


def test_long_policy_reply_full_of_percent_signs_reaches_the_client(tmp_path, capture):
    # Cut at 900 characters after doubling, this text ended in a lone '%': libmilter refused
    # the reply and the client got an anonymous error instead of the policy's verdict.
    text = "Sorry " + "50% off " * 125
    milter = RunningMilter(tmp_path)
    milter.write_policy(
        "sale.py", f"def validate_rcptto(ctx):\n    ctx.reject({text!r}, '550', '5.7.1')\n"
    )
    with (
        milter,
        mta(milter, capture) as postfix,
        pytest.raises(smtplib.SMTPRecipientsRefused) as info,
    ):
        send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit"))
    ((code, reply),) = info.value.recipients.values()
    assert code == 550, reply
    assert reply.decode().startswith("5.7.1 Sorry 50% off 50% off"), reply
    assert len(reply) > 800
