"""Out-of-band bounces and complaints end to end, through a real private Postfix (SPEC 13).

The milter gives the copy a return path at ``bounce_domain`` (``chgfrom``); the receiving
server refuses the recipient after Postfix has accepted the message (550 5.1.1, as a remote
MX does), so Postfix's own bounce daemon writes a real RFC 3464 DSN to that return path.
Postfix routes the bounce domain to a capture server (transport_maps), and the DSN it got is
piped into ``smtpapi-milter bounce-in`` as Postfix's pipe transport would run it.
"""

from __future__ import annotations

import email
import subprocess
import sys

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.postfix import PrivatePostfix

from . import corpus
from .harness.answering_mx import AnsweringMX
from .harness.smtpapi import ROOT, RunningMilter
from .test_milter_postfix_events import HTML, TRACKED, events, send

BOUNCE_DOMAIN = "bounces.example.test"
UNKNOWN = "Unknown.Reader@example.org"  # the answering MX refuses unknown*: 550 5.1.1


def bounce_in(milter: RunningMilter, report: bytes, recipient: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "bounce-in"]
    argv += ["--config", str(milter.config_path), recipient]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, input=report, capture_output=True, env=env, timeout=60)


def suppressions(milter: RunningMilter) -> str:
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "suppression", "list"]
    argv += ["--config", str(milter.config_path), "--format", "json"]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, check=True, text=True, env=env).stdout


def arf_report(return_path: str, rcpt: str) -> bytes:
    """An RFC 5965 abuse report as a feedback loop sends it (RFC 5965 section B.2's shape),
    enclosing the headers of the copy complained about, its Return-Path among them."""
    return (
        "From: <staff@fbl.example.net>\r\n"
        "To: <fbl@bounces.example.test>\r\n"
        "Subject: FW: newsletter\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="part1"\r\n'
        "\r\n--part1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "\r\n--part1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: <{rcpt}>\r\n"
        "\r\n--part1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{return_path}>\r\nFrom: news@example.com\r\nTo: {rcpt}\r\n"
        "Subject: newsletter\r\n"
        "\r\n--part1--\r\n"
    ).encode()


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def test_dsn_and_complaint_to_the_return_path_become_events(tmp_path, capture):
    newsletter = corpus.wrap_html(HTML, "8bit", TRACKED)
    route = {"transport_maps": f"inline:{{{BOUNCE_DOMAIN}=smtp:[127.0.0.1]:{capture.port}}}"}
    milter = RunningMilter(tmp_path, smtpapi={"bounce_domain": BOUNCE_DOMAIN})
    with (
        milter,
        AnsweringMX() as mx,
        PrivatePostfix(smtpd_milters=milter.socket, relay_port=mx.port, extra_main_cf=route) as pf,
    ):
        assert send(pf.smtp_port, newsletter, [UNKNOWN]) == {}
        (dsn,) = capture.wait_for(1, timeout=60)
        (injection,) = events(milter, "injection")
        return_path = dsn.rcpt_tos[0]
        # The DSN went to the copy's return path, the envelope sender the milter gave it.
        local, _, domain = return_path.partition("@")
        assert domain == BOUNCE_DOMAIN and local.startswith("bounce-") and len(local) <= 64
        assert dsn.mail_from in ("", "<>")  # a bounce: the null sender
        assert email.message_from_bytes(dsn.data).get_param("report-type") == "delivery-status"
        assert injection["msg_from"] == "news@example.com"  # the sender's own, kept

        done = bounce_in(milter, dsn.data, return_path)
        assert done.returncode == 0, done.stderr
        (bounce,) = events(milter, "out_of_band")
        assert bounce_in(milter, dsn.data, return_path).returncode == 0  # piped twice: once
        assert len(events(milter, "out_of_band")) == 1

        complaint = arf_report(return_path, UNKNOWN)
        done = bounce_in(milter, complaint, f"fbl@{BOUNCE_DOMAIN}")
        assert done.returncode == 0, done.stderr
        (spam,) = events(milter, "spam_complaint")

        other = "a" if local[12] != "a" else "b"  # one character of the token changed
        forged = f"{local[:12]}{other}{local[13:]}@{domain}"
        assert bounce_in(milter, dsn.data, forged).returncode == 0
        assert bounce_in(milter, arf_report(forged, UNKNOWN), "fbl@x.test").returncode == 0
        assert len(events(milter, "out_of_band")) == 1
        assert len(events(milter, "spam_complaint")) == 1
        listed = suppressions(milter)
    assert bounce["bounce_class"] == "10" and bounce["raw_reason"].startswith("550 5.1.1")
    for event in (bounce, spam):
        for key in ("transmission_id", "message_id", "campaign_id", "rcpt_tags", "rcpt_meta"):
            assert event[key] == injection[key]
        assert event["rcpt_to"] == UNKNOWN.lower() and event["msg_from"] == "news@example.com"
    assert bounce["campaign_id"] == "spring"
    assert (spam["fbtype"], spam["report_by"], spam["user_agent"]) == (
        "abuse",
        "fbl.example.net",
        "SomeGenerator/1.0",
    )
    assert '"source": "bounce"' in listed and '"source": "spam_complaint"' in listed
