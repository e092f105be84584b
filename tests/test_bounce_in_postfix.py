"""Out-of-band bounces and complaints end to end, through a real private Postfix (SPEC 13).

The milter gives the copy a return path at ``bounce_domain`` (``chgfrom``); the receiving
server refuses the recipient after Postfix has accepted the message (550 5.1.1, as a remote
MX does), so Postfix's own bounce daemon writes a real RFC 3464 DSN to that return path.
Postfix routes the bounce domain to a capture server (transport_maps), and the DSN it got is
piped into ``smtpapi-milter bounce-in`` as Postfix's pipe transport would run it.
"""

from __future__ import annotations

import email
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from smtpapi_milter.bounces_in.return_path import ReturnPaths, ReturnPathToken
from smtpapi_milter.config import load_config
from smtpapi_milter.events.store import open_store
from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.ports import free_port
from smtpapi_milter.sandbox.postfix import PrivatePostfix
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .harness.answering_mx import AnsweringMX
from .harness.smtpapi import ROOT, RunningMilter
from .test_milter_postfix_events import HTML, TRACKED, events, send

BOUNCE_DOMAIN = "bounces.example.test"
UNKNOWN = "Unknown.Reader@example.org"  # the answering MX refuses unknown*: 550 5.1.1
FOLLOWER = '\n[maillog]\nsource = "/var/log/mail.log"\n'


def bounce_in(
    milter: RunningMilter, report: bytes, recipient: str, config: Path | None = None
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "smtpapi_milter.cli", "bounce-in"]
    argv += ["--config", str(config or milter.config_path), recipient]
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

        # This DSN is Postfix's own, for a refusal its log tells: with the maillog follower
        # on, that is its bounce event to record, not an out-of-band one.
        following = tmp_path / "following-the-log.toml"
        following.write_text(milter.config_path.read_text() + FOLLOWER)
        done = bounce_in(milter, dsn.data, return_path, following)
        assert done.returncode == 0 and b"our MTA's own DSN" in done.stderr, done.stderr
        assert events(milter, "out_of_band") == []

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


# --- the shipped pipe transport ----------------------------------------------------------

SNIPPETS = ROOT / "packaging" / "postfix"
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
SERVICE_USER = "nobody"  # stands in for the packaged "smtpapi": pipe(8) refuses root


def packaged_pipe(config: Path) -> str:
    """The master.cf entry of packaging/postfix/master.cf.snippet, run here: as an unprivileged
    user who can reach this checkout, with the test's configuration. The venv's interpreter
    lives under /root, which that user cannot enter: the system Python of the same version
    runs the checkout and the venv's packages instead."""
    text = (SNIPPETS / "master.cf.snippet").read_text()
    entry = re.search(r"^smtpapi-bounce-in unix.*\n(?:[ \t]+\S.*\n)+", text, re.M)
    assert entry, "the snippet has no smtpapi-bounce-in entry: update this test"
    python = f"/usr/bin/env PYTHONPATH={ROOT / 'milter'}:{SITE_PACKAGES} /usr/bin/python3 -m"
    service = entry.group(0).replace("user=smtpapi", f"user={SERVICE_USER}")
    service = service.replace("argv=/usr/bin/smtpapi-milter", f"argv={python} smtpapi_milter.cli")
    return service.replace("/etc/smtpapi-milter/smtpapi-milter.toml", str(config))


def packaged_main_cf() -> dict[str, str]:
    """The snippet's active bounce-in setting, and its commented transport_maps line put to
    work for the test's bounce domain."""
    text = (SNIPPETS / "main.cf.snippet").read_text()
    limit = re.search(r"^(smtpapi-bounce-in_destination_recipient_limit) = (\d+)$", text, re.M)
    route = re.search(r"^#(transport_maps) = (inline:\{ bounces\.example\.com=.*\})$", text, re.M)
    assert limit and route, "the snippet's bounce-in lines changed: update this test"
    return {
        limit[1]: limit[2],
        route[1]: route[2].replace("bounces.example.com", BOUNCE_DOMAIN),
    }


def system_python_matches() -> bool:
    try:
        found = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return found == str(sys.version_info[:2])


def wait_for_events(url: str, kind: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        store = open_store(url)
        try:
            found = store.query(types=[kind])
        finally:
            store.close()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.skipif(not system_python_matches(), reason="/usr/bin/python3 is not this Python")
def test_split_copies_bounce_through_the_packaged_pipe_transport(postgres):
    """Two recipients in split mode: each copy has its own return path, the MTA refuses both,
    Postfix writes two DSNs and its pipe transport (as the snippet configures it) hands each
    to bounce-in, which stores them in PostgreSQL (the store the pipe's user can reach)."""
    url = postgres.create_database(f"oob{os.getpid()}")
    workdir = Path(tempfile.mkdtemp(prefix="smtpapi-oob-", dir="/tmp"))
    workdir.chmod(0o755)  # the pipe's user reads the configuration and the link key here
    reinject = free_port()
    listener = f"127.0.0.1:{reinject} inet n - n - - smtpd -o smtpd_milters=\n"
    milter = RunningMilter(
        workdir,
        smtpapi={
            "bounce_domain": BOUNCE_DOMAIN,
            "multi_recipient": "split",
            "reinject_to": f"127.0.0.1:{reinject}",
        },
        events={"store": url},
    )
    rcpts = ["unknown1@example.org", "unknown2@example.org"]
    try:
        with milter, AnsweringMX() as mx:
            user = pwd.getpwnam(SERVICE_USER)
            for path in (workdir / "state", workdir / "state" / "link-keys"):
                os.chown(path, user.pw_uid, user.pw_gid)
            master = listener + packaged_pipe(milter.config_path)
            with PrivatePostfix(
                smtpd_milters=milter.socket,
                relay_port=mx.port,
                extra_main_cf=packaged_main_cf(),
                extra_master_cf=master,
            ) as pf:
                assert send(pf.smtp_port, corpus.wrap_html(HTML, "8bit", TRACKED), rcpts) == {}
                bounces = wait_for_events(url, "out_of_band", 2)
                injections = wait_for_events(url, "injection", 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert sorted(e["rcpt_to"] for e in bounces) == rcpts
    by_rcpt = {e["rcpt_to"]: e for e in injections}
    for bounce in bounces:
        injected = by_rcpt[bounce["rcpt_to"]]
        assert bounce["message_id"] == injected["message_id"]  # each copy its own
        assert (bounce["bounce_class"], bounce["campaign_id"]) == ("10", "spring")
    assert len({e["message_id"] for e in bounces}) == 2


def test_stopped_postgresql_exits_75(postgres_running, tmp_path):
    """The store is down: Postfix must keep the report and retry (sysexits EX_TEMPFAIL)."""
    url = postgres_running.create_database(f"oobdown{os.getpid()}")
    config = tmp_path / "smtpapi-milter.toml"
    milter = RunningMilter(tmp_path, smtpapi={"bounce_domain": BOUNCE_DOMAIN})
    config.write_text(config_text_with_store(milter.config_path, url))
    keys = TokenCodec.from_config(load_config(str(config)))  # makes the state dir's key
    address = ReturnPaths.from_codec(keys).address(
        ReturnPathToken("1234567890123", 0, False), BOUNCE_DOMAIN
    )
    report = arf_report(address, "reader@example.org")
    postgres_running.stop()
    done = bounce_in(milter, report, f"fbl@{BOUNCE_DOMAIN}")
    assert done.returncode == 75, done.stderr
    postgres_running.start()
    done = bounce_in(milter, report, f"fbl@{BOUNCE_DOMAIN}")
    assert done.returncode == 0, done.stderr
    store = open_store(url)
    try:
        assert len(store.query(types=["spam_complaint"])) == 1
    finally:
        store.close()


def config_text_with_store(path: Path, url: str) -> str:
    return path.read_text() + f'\n[events]\nstore = "{url}"\n'
