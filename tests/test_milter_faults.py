"""Fault and edge behaviour of the real milter process inside a real Postfix.

A killed worker, a hanging policy, SIGTERM in the middle of a transaction, and mail that
does not come over SMTP at all (Postfix's ``sendmail`` command and ``non_smtpd_milters``).
In every case the rule is the same: mail is delivered or the client was told to retry;
nothing is accepted and forgotten, nothing is stuck.
"""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from . import corpus
from .harness.capture import CaptureServer
from .harness.ports import deadline_in, free_port, wait_for_port
from .harness.postfix import PrivatePostfix
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED
from .test_milter_postfix import HTML, codec_of, html_of, mta, send

RCPTS = ["one@example.org", "two@example.org", "three@example.org"]


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def tracked_recipients(milter: RunningMilter, data: bytes) -> set[str]:
    codec = codec_of(milter)
    return {codec.decode(t).rcpt_to for t in TRACKED.findall(html_of(data))}


# --- non-SMTP submissions ---------------------------------------------------------------------


def local_mta(milter: RunningMilter, capture: CaptureServer, **kwargs) -> PrivatePostfix:
    """Postfix whose sendmail command (pickup → cleanup) goes through our milter."""
    return PrivatePostfix(non_smtpd_milters=milter.socket, relay_port=capture.port, **kwargs)


def test_local_submission_to_several_recipients_is_shared_under_defer(tmp_path, capture):
    message = corpus.wrap_html(HTML, "quoted-printable")
    with (
        RunningMilter(tmp_path, smtpapi={"multi_recipient": "defer"}) as milter,
        local_mta(milter, capture) as postfix,
    ):
        postfix.submit(message, "news@example.com", RCPTS)  # cannot be asked to retry
        delivered = capture.wait_for(1, timeout=30)
        assert sorted(r for m in delivered for r in m.rcpt_tos) == sorted(RCPTS)
        # One body for everyone: its links name no recipient.
        assert {tracked_recipients(milter, m.data) == {""} for m in delivered} == {True}
        (line,) = milter.wait_for_log("message")
        assert line["verdict"] == "accept" and line["recipients"] == 3
        # The capture server keeps a message before its 250; Postfix removes its queue file
        # only once smtp has that answer and qmgr is told.
        postfix.wait_for_log(r": removed$", timeout=30)
        assert postfix.queue_ids() == []


def test_local_submission_to_one_recipient_stays_personal(tmp_path, capture):
    milter = RunningMilter(tmp_path)
    milter.write_policy(
        "origin.py",
        "def validate_data_spool(ctx):\n"
        "    ctx.set('smtpapi_campaign_id', 'local' if ctx.non_smtp else 'smtp')\n",
    )
    with milter, local_mta(milter, capture) as postfix:
        postfix.submit(corpus.wrap_html(HTML, "8bit"), "news@example.com", ["solo@example.org"])
        (delivered,) = capture.wait_for(1, timeout=30)
        assert tracked_recipients(milter, delivered.data) == {"solo@example.org"}
        token = TRACKED.search(html_of(delivered.data)).group(1)
        assert codec_of(milter).decode(token).campaign_id == "local"  # policies can tell


def test_local_submission_is_split_when_configured(tmp_path, capture):
    reinject_port = free_port()
    milter = RunningMilter(
        tmp_path, smtpapi={"multi_recipient": "split", "reinject_to": f"127.0.0.1:{reinject_port}"}
    )
    listener = f"127.0.0.1:{reinject_port} inet n - n - - smtpd -o smtpd_milters=\n"
    message = corpus.wrap_html(HTML, "quoted-printable")
    with milter, local_mta(milter, capture, extra_master_cf=listener) as postfix:
        postfix.submit(message, "news@example.com", RCPTS)
        delivered = capture.wait_for(3, timeout=60)
        seen = {m.rcpt_tos: tracked_recipients(milter, m.data) for m in delivered}
    assert seen == {(r,): {r} for r in RCPTS}


# --- the worker dies, hangs or is told to stop ----------------------------------------------


def worker_pid(milter: RunningMilter) -> int:
    """The libmilter worker the supervisor (``milter.process``) runs."""
    assert milter.process is not None
    pid = milter.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = deadline_in(timeout)
    while Path(f"/proc/{pid}").exists() and "(Z)" not in _state(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:4].replace(" ", "(") + ")"
    except OSError:
        return "(Z)"


def open_transaction(port: int, rcpt: str = "jane.doe@example.org") -> smtplib.SMTP:
    """An SMTP session that got as far as an accepted RCPT (so the milter saw it)."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo()
    assert client.mail("news@example.com")[0] == 250
    assert client.rcpt(rcpt)[0] == 250
    return client


def test_killed_worker_tempfails_and_the_retry_is_delivered(tmp_path, capture):
    message = corpus.wrap_html(HTML, "8bit")
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        client = open_transaction(postfix.smtp_port)
        worker = worker_pid(milter)
        os.kill(worker, signal.SIGKILL)
        wait_gone(worker)
        try:
            code, text = client.data(message)  # smtplib raises only if DATA itself fails
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, exc.smtp_error
        finally:
            client.close()
        assert 400 <= code < 500, (code, text)  # "try again", not "accepted"
        assert postfix.queue_ids() == []  # nothing was accepted, so nothing can be lost
        # The supervisor starts a new worker; the client's retry goes through it.
        wait_for_port("127.0.0.1", milter.port, deadline_in(30))
        send(postfix.smtp_port, message)
        (delivered,) = capture.wait_for(1, timeout=30)
        assert tracked_recipients(milter, delivered.data) == {"jane.doe@example.org"}


HANGING_POLICY = """
import pathlib, time

def validate_data_spool(ctx):
    if "hang@example.org" in ctx.recipients:
        pathlib.Path({entered!r}).touch()
        time.sleep(3600)
"""


def test_hanging_policy_is_cut_off_and_other_mail_flows(tmp_path, capture):
    entered = tmp_path / "entered"
    milter = RunningMilter(tmp_path, policy={"timeout": 3})
    milter.write_policy("hang.py", HANGING_POLICY.format(entered=str(entered)))
    message = corpus.wrap_html(HTML, "8bit")
    outcome: list[BaseException | float] = []

    def hanging_send() -> None:
        try:
            send(postfix.smtp_port, message, ["hang@example.org"])
        except smtplib.SMTPResponseException as exc:
            outcome.extend([exc, time.monotonic()])

    with milter, mta(milter, capture) as postfix:
        sender = threading.Thread(target=hanging_send)
        sender.start()
        deadline = deadline_in(30)
        while not entered.exists():
            assert time.monotonic() < deadline, "policy never ran"
            time.sleep(0.02)
        send(postfix.smtp_port, message, ["other@example.org"])  # while the policy hangs
        accepted = time.monotonic()
        (delivered,) = capture.wait_for(1, timeout=30)
        sender.join(timeout=60)
        error, answered = outcome
        assert (error.smtp_code, error.smtp_error[:5]) == (451, b"4.3.0"), error
        assert accepted < answered  # served while the other connection was still stuck
        assert delivered.rcpt_tos == ("other@example.org",)
        assert any(line.get("event") == "policy timed out" for line in milter.log_lines())


def test_sigterm_lets_the_transaction_in_progress_finish(tmp_path, capture):
    message = corpus.wrap_html(HTML, "8bit")
    with RunningMilter(tmp_path) as milter, mta(milter, capture) as postfix:
        client = open_transaction(postfix.smtp_port)
        supervisor = milter.process
        assert supervisor is not None
        supervisor.send_signal(signal.SIGTERM)
        milter.wait_for_log("stopping: finishing the transactions in progress")
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as late:
            code, text = late.mail("news@example.com")  # a new transaction: come back later
            assert (code, text[:5]) == (451, b"4.3.2"), (code, text)
        assert client.data(message)[0] == 250  # the one in progress completes
        client.quit()
        (delivered,) = capture.wait_for(1, timeout=30)
        assert tracked_recipients(milter, delivered.data) == {"jane.doe@example.org"}
        assert supervisor.wait(timeout=30) == 0
