"""Hostile reply text through the real milter and Postfix.

A reply is one SMTP line of printable ASCII (RFC 5321 "textstring"); libmilter carries it as a
C string. Whatever text a policy's verdict holds, the client gets the verdict's own code with
a readable line, 8-bit and control characters replaced.
"""

from __future__ import annotations

import smtplib

from . import corpus
from .harness.capture import CaptureServer
from .harness.postfix import PrivatePostfix
from .harness.smtpapi import RunningMilter

# recipient -> (what the policy says, what the client hears)
CASES = {
    "nul@example.org": ("no\x00entry", b"5.7.1 no entry"),  # pymilter refused it: a 451
    "utf8@example.org": ("café fermé", b"5.7.1 caf? ferm?"),  # went out as raw UTF-8
    "controls@example.org": ("tab\there\x7f", b"5.7.1 tab here"),
}
POLICY = f"""\
CASES = {{rcpt: said for rcpt, (said, _) in {CASES!r}.items()}}

def validate_data_spool(ctx):
    ctx.reject(CASES[ctx.recipients[0]])
"""


def test_policy_reply_text_reaches_the_client_as_one_ascii_line(tmp_path):
    milter = RunningMilter(tmp_path)
    milter.write_policy("say.py", POLICY)
    message = corpus.wrap_html(b"<p>x</p>", "8bit")
    heard = {}
    with (
        CaptureServer() as capture,
        milter,
        PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port) as postfix,
    ):
        for rcpt in CASES:
            with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
                try:
                    client.sendmail("news@example.com", [rcpt], message)
                except smtplib.SMTPDataError as exc:
                    heard[rcpt] = (exc.smtp_code, exc.smtp_error)
    assert heard == {rcpt: (550, text) for rcpt, (_, text) in CASES.items()}
