"""List-Unsubscribe headers through a real private Postfix (SPEC 14, RFC 8058).

Our milter as a real process, Postfix relaying to a capture server: what a mailbox provider
receives carries one List-Unsubscribe (ours first, the sender's entries kept, folded if it
must be) and one List-Unsubscribe-Post; split copies carry tokens of their own recipient;
transactional mail carries neither.
"""

from __future__ import annotations

import re
from email import message_from_bytes

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.ports import free_port

from . import corpus
from .harness.smtpapi import RunningMilter
from .test_milter_postfix import HTML, codec_of, mta, send

UNSUB = re.compile(r"<http://(?P<domain>[^/]+)/u/(?P<token>[A-Za-z0-9_-]+)>")
TRACK = b'X-MSYS-API: {"campaign_id": "weekly", "options": {"click_tracking": true}}'
SENDER = (
    b"List-Unsubscribe: <mailto:leave@example.com?subject=unsubscribe>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
)


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def fields(data: bytes, name: str) -> list[str]:
    return [" ".join(v.split()) for v in message_from_bytes(data).get_all(name) or []]


def entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",")]


def test_delivered_message_carries_one_combined_header_and_one_post(tmp_path, capture):
    long_entry = b"<https://example.com/unsubscribe?id=" + b"x" * 960 + b">"
    milter = RunningMilter(tmp_path, smtpapi={"list_unsubscribe": True})
    with milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", TRACK + b"\r\n" + SENDER))
        folded = SENDER.replace(b">\r\n", b">, " + long_entry + b"\r\n", 1)
        send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", TRACK + b"\r\n" + folded))
        first, second = sorted(capture.wait_for(2, timeout=30), key=lambda m: len(m.data))
        codec = codec_of(milter)
    (value,) = fields(first.data, "List-Unsubscribe")
    assert fields(first.data, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    ours, mailto = entries(value)
    data = codec.decode(UNSUB.fullmatch(ours).group("token"))
    assert (data.kind, data.rcpt_to, data.campaign_id) == (
        "unsubscribe",
        "jane.doe@example.org",
        "weekly",
    )
    assert mailto == "<mailto:leave@example.com?subject=unsubscribe>"
    # Over 998 octets on one line: folded between entries, and Postfix keeps it one field.
    (value,) = fields(second.data, "List-Unsubscribe")
    assert entries(value)[1:] == [mailto, long_entry.decode()]
    raw = second.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_split_copies_are_bound_to_their_own_recipient(tmp_path, capture):
    reinject_port = free_port()
    milter = RunningMilter(
        tmp_path,
        smtpapi={
            "list_unsubscribe": True,
            "multi_recipient": "split",
            "reinject_to": f"127.0.0.1:{reinject_port}",
        },
    )
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    rcpts = ["one@example.org", "two@example.org"]
    with milter, mta(milter, capture, extra_master_cf=listener) as postfix:
        assert send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", TRACK), rcpts) == {}
        delivered = capture.wait_for(2, timeout=60)
        codec = codec_of(milter)
    for copy in delivered:
        (value,) = fields(copy.data, "List-Unsubscribe")
        assert codec.decode(UNSUB.fullmatch(value).group("token")).rcpt_to == copy.rcpt_tos[0]


def test_transactional_mail_carries_neither(tmp_path, capture):
    header = b'X-MSYS-API: {"options": {"click_tracking": true, "transactional": true}}'
    milter = RunningMilter(tmp_path, smtpapi={"list_unsubscribe": True})
    with milter, mta(milter, capture) as postfix:
        send(postfix.smtp_port, corpus.wrap_html(HTML, "8bit", header))
        (delivered,) = capture.wait_for(1, timeout=30)
    assert b"List-Unsubscribe" not in delivered.data
