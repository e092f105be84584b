"""The shipped Postfix snippets, run in a real Postfix: wiring, split re-injection, signer order.

packaging/postfix/main.cf.snippet and master.cf.snippet go into a private Postfix as they
are, but for ports, the milter address and chroot (the test instance has none). A stand-in
DKIM signer (tests/harness/digest_milter.py, a real milter that stamps the digest of the body
it saw) is the snippets' $smtpapi_signing_milters. A second injection listener with the milters
in the wrong order shows what the snippet's comment warns about.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .harness.capture import CaptureServer
from .harness.digest_milter import DIGEST_HEADER
from .harness.ports import deadline_in, free_port, wait_for_port, wait_for_smtp_banner
from .harness.postfix import PrivatePostfix
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED, TRACKING_DOMAIN
from .test_milter_postfix import HTML, html_of

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "packaging" / "postfix"
CAMPAIGN_ONLY = b'X-MSYS-API: {"campaign_id": "snippet"}'


def substitute(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is no longer in the snippet once: update this test"
    return text.replace(old, new)


def main_cf() -> dict[str, str]:
    settings = {}
    for line in (SNIPPETS / "main.cf.snippet").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def master_cf(inject: int, wrong_order: int, reinject: int, milter: str) -> str:
    text = (SNIPPETS / "master.cf.snippet").read_text()
    text = substitute(text, "inet:127.0.0.1:8890,", f"{milter},")
    text = substitute(text, "127.0.0.1:10026 inet n  -       y", f"127.0.0.1:{reinject} inet n - n")
    text = substitute(
        text, "\n2525      inet  n       -       y", f"\n127.0.0.1:{inject} inet n - n"
    )
    # The same listener with the signer first: the order the snippet's comments warn against.
    block = re.search(rf"127\.0\.0\.1:{inject} inet.*?\n(?=\n)", text, re.S).group(0)
    wrong = block.replace(f"127.0.0.1:{inject} ", f"127.0.0.1:{wrong_order} ")
    wrong = substitute(
        wrong, f"={milter},$smtpapi_signing_milters", f"=$smtpapi_signing_milters,{milter}"
    )
    return text + "\n" + wrong


@contextlib.contextmanager
def digest_milter() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.digest_milter", str(port)], cwd=ROOT
    )
    try:
        wait_for_port("127.0.0.1", port, deadline_in(20))
        yield f"inet:127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGKILL)  # a stand-in: no connections worth draining
        process.wait()


def body_digest_matches(data: bytes) -> bool:
    stamped = message_from_bytes(data)[DIGEST_HEADER]
    body = data[data.index(b"\r\n\r\n") + 4 :]
    return stamped == hashlib.sha256(body).hexdigest()


def send(port: int, message: bytes, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        assert client.sendmail("news@example.com", rcpts, message) == {}


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def test_snippets_track_split_and_sign_after_the_milter(tmp_path, capture):
    inject, wrong_order, reinject = free_port(), free_port(), free_port()
    milter = RunningMilter(
        tmp_path,
        smtpapi={"multi_recipient": "split", "reinject_to": f"127.0.0.1:{reinject}"},
        # Tracking on for the snippet's listener name only: proves milter_macro_daemon_name.
        **{"smtpapi.listener.smtpapi-in": {"click_tracking_enabled": True}},
    )
    message = corpus.wrap_html(HTML, "quoted-printable", CAMPAIGN_ONLY)
    rcpts = ["one@example.org", "two@example.org"]
    with milter, digest_milter() as signer:
        settings = {**main_cf(), "smtpapi_signing_milters": signer}
        listeners = master_cf(inject, wrong_order, reinject, milter.socket)
        with PrivatePostfix(
            relay_port=capture.port, extra_main_cf=settings, extra_master_cf=listeners
        ):
            for port in (inject, wrong_order, reinject):
                wait_for_smtp_banner("127.0.0.1", port, deadline_in(20))
            send(inject, message, rcpts)
            delivered = capture.wait_for(2, timeout=60)
            capture.clear()
            send(wrong_order, message, ["three@example.org"])
            (wrongly_signed,) = capture.wait_for(1, timeout=30)
        codec = TokenCodec.from_config(load_config(str(milter.config_path)), create=False)

    # One personalised copy each, the second through the re-injection listener (no second pass
    # through our milter: its links are tracked once), both signed over the tracked body.
    by_rcpt = {m.rcpt_tos[0]: m.data for m in delivered}
    assert sorted(by_rcpt) == rcpts
    for rcpt, data in by_rcpt.items():
        tokens = [codec.decode(t) for t in TRACKED.findall(html_of(data))]
        assert {t.rcpt_to for t in tokens} == {rcpt}
        assert {t.target_url for t in tokens} == {
            "https://example.com/a?x=1&y=2",
            "https://example.com/b",
        }
        assert b"X-MSYS-API" not in data
        assert body_digest_matches(data), rcpt
    # Signer before the milter: tracked, but the signature covers a body nobody receives.
    assert TRACKED.search(html_of(wrongly_signed.data))
    assert not body_digest_matches(wrongly_signed.data)


def send_like_a_mailer(port: int, message: bytes) -> bool:
    """Send as swaks and most application mailers do: STARTTLS whenever it is offered.
    Returns whether it was."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        offered = client.has_extn("starttls")
        if offered:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
            client.starttls(context=context)
            client.ehlo()
        assert client.sendmail("news@example.com", ["tls@example.org"], message) == {}
    return offered


# Stock master.cf has it (the private instance runs only what tests need): without it smtpd
# has no TLS session cache and entropy, and answers 454 to STARTTLS whatever the certificate.
TLSMGR = "\ntlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "smtpapi.key", directory / "smtpapi.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=mta.test", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
    )
    return key, cert


@pytest.mark.parametrize("certificate", [False, True], ids=["no-certificate", "certificate"])
def test_injection_listener_tls_works_out_of_the_box(tmp_path, capture, certificate):
    """As shipped, on a host without a certificate (main.cf without TLS), the listener must not
    offer a STARTTLS it answers with 454 4.7.0; with the snippet's commented certificate lines
    switched on, STARTTLS is offered and works."""
    inject, wrong_order, reinject = free_port(), free_port(), free_port()
    with RunningMilter(tmp_path) as milter:
        listeners = master_cf(inject, wrong_order, reinject, milter.socket)
        if certificate:
            key, cert = self_signed(tmp_path)
            commented = (
                "  #-o smtpd_tls_chain_files=/etc/ssl/private/smtpapi.key,/etc/ssl/certs/"
                "smtpapi.crt\n  #-o smtpd_tls_security_level=may"
            )
            assert commented in listeners, "update this test to the snippet's TLS lines"
            # The first copy is the injection listener's (master_cf appends another).
            listeners = listeners.replace(
                commented,
                f"  -o smtpd_tls_chain_files={key},{cert}\n  -o smtpd_tls_security_level=may",
                1,
            )
        with PrivatePostfix(
            relay_port=capture.port, extra_main_cf=main_cf(), extra_master_cf=listeners + TLSMGR
        ):
            wait_for_smtp_banner("127.0.0.1", inject, deadline_in(20))
            offered = send_like_a_mailer(inject, corpus.wrap_html(HTML, "8bit", CAMPAIGN_ONLY))
            capture.wait_for(1, timeout=30)
    assert offered == certificate


def readme_swaks_command() -> str:
    """The test message of README's "Install on a mail server", as written there."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("swaks --server 127.0.0.1:2525")
    lines = []
    for line in readme[start:].splitlines():
        lines.append(line.strip())
        if not line.endswith("\\"):
            return "\n".join(lines)
    raise AssertionError("README's swaks command has no end")


def test_readme_test_message_goes_through_the_snippet_listener_tracked(tmp_path, capture):
    inject, wrong_order, reinject = free_port(), free_port(), free_port()
    with RunningMilter(tmp_path, smtpapi={"tracking_domain": TRACKING_DOMAIN}) as milter:
        listeners = master_cf(inject, wrong_order, reinject, milter.socket)
        with PrivatePostfix(
            relay_port=capture.port, extra_main_cf=main_cf(), extra_master_cf=listeners
        ):
            wait_for_smtp_banner("127.0.0.1", inject, deadline_in(20))
            command = substitute(readme_swaks_command(), ":2525", f":{inject}")
            sent = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=60
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            (delivered,) = capture.wait_for(1, timeout=30)
    assert b"X-MSYS-API" not in delivered.data
    assert TRACKED.search(html_of(delivered.data)), delivered.data
