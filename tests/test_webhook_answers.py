"""Only a complete 2xx answer counts as a webhook delivery (issue 15, item 9).

A receiver that sends ``200 OK`` and then trickles its headers used to be cut by the watchdog
and logged as delivered: http.client takes the end of the connection for the end of the
headers. These tests answer badly on purpose from a real socket on loopback: trickled headers,
a trickled body, a connection closed in the middle. Each must be a failed POST and, through
the real dispatcher, a retry of the same batch with no "delivered" record. Name resolution
runs under the same deadline.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time

import pytest

from smtpapi_milter.events.store import open_store
from smtpapi_milter.events.webhook_http import Poster, batch_body
from smtpapi_milter.events.webhooks import DeliveryTuning, WebhookDispatcher

from .harness.misbehaving_http import (
    CLOSE,
    COMPLETE_200,
    TRICKLE,
    MisbehavingReceiver,
    read_request,
)
from .test_webhooks import FAST, ev, hook

TIMEOUT = 0.5
BODY = batch_body([ev(1)])
HEADERS = {"Content-Type": "application/json", "X-MessageSystems-Batch-ID": "b-1"}

STATUS_THEN_TRICKLED_HEADERS = [b"HTTP/1.1 200 OK\r\n", TRICKLE(b"X-Slow: " + b"a" * 200, 0.05)]
TRICKLED_BODY = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", TRICKLE(b"x" * 100, 0.05)]
TRICKLED_BODY_TO_CLOSE = [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    TRICKLE(b"x" * 100, 0.05),
]


def post_to(script: list, timeout: float = TIMEOUT):
    with MisbehavingReceiver(default=script) as rx:
        began = time.monotonic()
        result = Poster(rx.url(), timeout=timeout).post(BODY, HEADERS)
        return result, time.monotonic() - began


@pytest.mark.parametrize(
    "script",
    [STATUS_THEN_TRICKLED_HEADERS, TRICKLED_BODY, TRICKLED_BODY_TO_CLOSE],
    ids=["trickled-headers", "trickled-body", "trickled-body-framed-by-close"],
)
def test_an_answer_cut_at_the_deadline_is_not_a_delivery(script):
    result, spent = post_to(script)
    assert (result.ok, result.status, result.detail) == (False, None, "timed out")
    assert TIMEOUT <= spent < TIMEOUT + 0.5


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", CLOSE], "end of its headers"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE], "7 bytes short"),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", CLOSE],
            "IncompleteRead",
        ),
    ],
    ids=["inside-headers", "inside-sized-body", "inside-chunked-body"],
)
def test_an_answer_closed_early_is_not_a_delivery(script, why):
    result, spent = post_to(script)
    assert not result.ok and result.status is None
    assert why in result.detail
    assert spent < TIMEOUT  # a failure at once, not a timeout


@pytest.mark.parametrize(
    "script",
    [
        COMPLETE_200,
        [b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
        [b"HTTP/1.0 200 OK\r\n\r\nall of it", CLOSE],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
    ],
    ids=["sized", "chunked", "framed-by-close", "no-content"],
)
def test_a_complete_2xx_answer_is_a_delivery(script):
    result, _ = post_to(script)
    assert result.ok, result.detail


def test_a_long_answer_is_read_to_its_end_within_the_deadline():
    # 3 MB arrives at once: read to the end (not just the first 64 KiB) and still counts.
    big = b"y" * 3_000_000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
    result, _ = post_to([head, big, CLOSE], timeout=5.0)
    assert result.ok and result.detail.startswith("200 OK: yyy")


def test_a_cut_answer_is_retried_under_its_batch_id_and_never_logged_delivered(tmp_path, info_logs):
    store = open_store(f"sqlite://{tmp_path}/events.sqlite3")
    tuning = DeliveryTuning(**{**FAST.__dict__, "timeout": TIMEOUT})
    logs = info_logs
    with MisbehavingReceiver() as rx:
        rx.answer_next([STATUS_THEN_TRICKLED_HEADERS])  # then complete answers
        store.record([ev(1), ev(2)])
        dispatcher = WebhookDispatcher(store, [hook(rx.url())], tuning=tuning)
        dispatcher.start()
        try:
            rx.wait_for_requests(2)
            stats = next(iter(dispatcher.stats().values()))
            deadline = time.monotonic() + 5
            while stats.batches_delivered == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # the second answer is complete: its bookkeeping follows
        finally:
            assert dispatcher.stop(5.0)
            store.close()
    first, second = (_batch_id(request) for request in rx.requests[:2])
    assert first == second
    assert (stats.batches_failed, stats.batches_delivered) == (1, 1)
    delivered = [e for e in logs if e["event"] == "webhook batch delivered"]
    assert [e["attempt"] for e in delivered] == [2]
    failed = [e for e in logs if e["event"] == "webhook batch failed; will retry"]
    assert [e["error"] for e in failed] == ["timed out"]


def _batch_id(request: bytes) -> str:
    for line in request.split(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"x-messagesystems-batch-id":
            return value.strip().decode()
    raise AssertionError("no batch id header")


# --- name resolution ---------------------------------------------------------------------


def test_a_host_name_is_resolved_by_the_system_resolver():
    # The real getaddrinfo path (localhost comes from /etc/hosts: no network needed).
    with MisbehavingReceiver() as rx:
        result = Poster(rx.url(host="localhost"), timeout=2.0).post(BODY, HEADERS)
        assert result.ok, result.detail
        assert len(rx.requests) == 1


def test_name_resolution_is_bounded_by_the_timeout():
    # This machine has no DNS server to make slow, so the resolver that hangs is a function:
    # what is tested is that the POST stops waiting for it at the deadline.
    release = threading.Event()
    asked: list[str] = []

    def hanging_resolver(host, port, *args):
        asked.append(host)
        release.wait(30)
        return socket.getaddrinfo("127.0.0.1", port, *args)

    try:
        with MisbehavingReceiver() as rx:
            poster = Poster(rx.url(host="slow-dns.example"), TIMEOUT, resolve=hanging_resolver)
            began = time.monotonic()
            result = poster.post(BODY, HEADERS)
            spent = time.monotonic() - began
            assert rx.requests == []
    finally:
        release.set()
    assert asked == ["slow-dns.example"]
    assert (result.ok, result.detail) == (False, "timed out")
    assert TIMEOUT <= spent < TIMEOUT + 0.5


def test_a_name_that_does_not_resolve_fails_at_once():
    result = Poster("http://no-such-host.invalid/hook", timeout=5.0).post(BODY, HEADERS)
    assert not result.ok and "gaierror" in result.detail


# --- TLS -----------------------------------------------------------------------------------


def self_signed(tmp_path, name: str) -> tuple[str, str]:
    cert, key = str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
        + ["-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize(("named", "ok"), [("localhost", True), ("other.example", False)])
def test_https_checks_the_certificate_against_the_url_host(tmp_path, named, ok):
    # The connection is made to the address resolved under the deadline; TLS must still
    # check the certificate against the host the URL names.
    cert, key = self_signed(tmp_path, named)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                read_request(tls)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ssl.SSLError):
            conn.close()  # the client refused our certificate

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        client_context = ssl.create_default_context(cafile=cert)
        poster = Poster(f"https://localhost:{port}/hook", 5.0, client_context)
        result = poster.post(BODY, HEADERS)
    finally:
        thread.join(10)
        listener.close()
    assert result.ok is ok, result.detail
    if not ok:
        assert "CERTIFICATE_VERIFY_FAILED" in result.detail
