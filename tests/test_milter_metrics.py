"""The milter's Prometheus metrics: every worker's messages counted on metrics_listen."""

from __future__ import annotations

import re
import smtplib
import urllib.request

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.postfix import PrivatePostfix

from . import corpus
from .harness.smtpapi import RunningMilter

HTML = b'<html><body><a href="https://example.com/a">a</a><a href="https://example.com/b">b</a>'


def scrape(milter: RunningMilter, path: str = "/metrics") -> str:
    url = f"http://127.0.0.1:{milter.metrics_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def workers_seen(milter: RunningMilter) -> set[int]:
    return {
        line["worker"]
        for line in milter.log_lines()
        if line.get("event") == "message" and "worker" in line
    }


def send(port: int, rcpt: str, header: bytes = corpus.TRACK_ALL) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("a@example.com", [rcpt], corpus.wrap_html(HTML, "8bit", header))


def test_messages_of_every_worker_are_counted(tmp_path):
    milter = RunningMilter(tmp_path, milter={"workers": 2})
    with (
        milter,
        CaptureServer() as capture,
        PrivatePostfix(smtpd_milters=milter.socket, relay_port=capture.port) as postfix,
    ):
        tracked = 0
        # A connection each: the kernel hands them to the workers; go on until both served.
        while tracked < 4 or len(workers_seen(milter)) < 2:
            assert tracked < 40, "one worker took every connection"
            send(postfix.smtp_port, f"r{tracked}@example.org")
            tracked += 1
            capture.wait_for(tracked, timeout=30)
        send(postfix.smtp_port, "plain@example.org", b"")
        with pytest.raises(smtplib.SMTPDataError):
            send(postfix.smtp_port, "bad@example.org", b'X-MSYS-API: {"tags": "x"}')
        capture.wait_for(tracked + 1, timeout=30)
        text = scrape(milter)
        assert scrape(milter, "/healthz") == "ok\n"
    assert value(text, 'smtpapi_milter_messages_total{verdict="tracked"}') == tracked
    assert value(text, 'smtpapi_milter_messages_total{verdict="untracked"}') == 1
    assert value(text, 'smtpapi_milter_messages_total{verdict="rejected"}') == 1
    assert value(text, "smtpapi_milter_links_tracked_total") == 2 * tracked
    assert value(text, "smtpapi_milter_message_seconds_count") == tracked + 2
    # One body for every tracked message: each worker analyses it once, then reuses it.
    assert value(text, 'smtpapi_milter_body_analyses_total{result="new"}') == 2
    assert value(text, 'smtpapi_milter_body_analyses_total{result="reused"}') == tracked - 2
