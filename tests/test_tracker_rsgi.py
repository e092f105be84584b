"""The public listener through Granian's RSGI interface (tracker/rsgi.py), over real HTTP.

The tracker (``RunningTracker``) serves its public listener through RSGI; the same tracker
app served through ASGI (Granian too, what the listener ran before) is the reference its
answers must equal byte for byte. What RSGI cannot give (header values with 8-bit bytes) is
pinned down here as the tracker behaves, next to what ASGI gave.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from smtpapi_milter.config import CONFIG_ENV, load_config
from smtpapi_milter.events.journal import backlog
from smtpapi_milter.events.store import open_store
from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_port
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker.rsgi import peer, token_of
from smtpapi_milter.tracker.server import JOURNAL_DIRECTORY

from .harness.smtpapi import ROOT, RunningTracker, stop_process, toml
from .test_tracker import BROWSER, events_of

TARGET = "https://shop.example/caf\u00e9?q=1&r=a b"


# -- Granian apps for the subprocesses below (imported by Granian's worker by name) --


def asgi_tracker() -> Any:
    """The public tracker app as the listener served it through ASGI."""
    from smtpapi_milter.tracker import server

    return server.tracker_app(load_config(os.environ[CONFIG_ENV]))


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """An ASGI app answering with what it was given: the scope, and ``?read=N`` bytes of the
    body at most (with how many messages that took), in two body messages."""
    limit = int(scope["query_string"].decode().partition("read=")[2] or 1 << 30)
    body, messages = b"", 0
    while len(body) < limit:
        message = await receive()
        messages += 1
        assert message["type"] == "http.request"
        body += message["body"]
        if not message["more_body"]:
            break
    shown = {
        key: scope[key] for key in ("type", "http_version", "method", "scheme", "path", "root_path")
    }
    shown.update(
        raw_path=scope["raw_path"].decode(),
        query_string=scope["query_string"].decode(),
        headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        client=list(scope["client"]),
        server=list(scope["server"]),
        read=len(body),
        messages=messages,
    )
    text = json.dumps(shown).encode()
    headers = [(b"content-type", b"application/json"), (b"x-echo", b"yes")]
    if scope["method"] != "HEAD":
        headers.append((b"content-length", str(len(text)).encode()))
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": text[:10], "more_body": True})
    await send({"type": "http.response.body", "body": text[10:]})


class EchoOverRsgi:
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        from smtpapi_milter.tracker.rsgi import serve_asgi

        await serve_asgi(echo, scope, protocol)


def echo_over_rsgi() -> EchoOverRsgi:
    return EchoOverRsgi()


class Granian:
    """A Granian server of ``target`` (a factory in this module) in a process of its own."""

    def __init__(self, target: str, interface: str, workdir: Path, env: dict | None = None):
        self.port = free_port()
        self.log = workdir / f"granian-{interface}-{self.port}.log"
        script = (
            "import sys\n"
            "from granian.constants import HTTPModes, Interfaces, Loops\n"
            "from granian.server import Server\n"
            f"Server('tests.test_tracker_rsgi:{target}', address='127.0.0.1', port={self.port},"
            f" interface=Interfaces('{interface}'), loop=Loops.uvloop, factory=True,"
            " workers=1, websockets=False, http=HTTPModes.http1, log_level='warning').serve()\n"
        )
        environ = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'milter'}", **(env or {})}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port("127.0.0.1", self.port, deadline_in(30))
        except Exception:
            self.stop()
            raise AssertionError(self.log.read_text()) from None

    def stop(self) -> None:
        stop_process(self.process)


def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """The whole response to ``request`` (sent as is, then the connection closed), without
    its Date header (the one part that may differ from one second to the next)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
        s.sendall(request)
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + sep + body


def http(method: str, path: str, agent: bytes = BROWSER.encode(), extra: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t.example\r\n".encode()
        + b"User-Agent: "
        + agent
        + b"\r\n"
        + extra
        + b"Connection: close\r\n\r\n"
    )


def stored(config_path: Path, rcpt: str) -> list[dict]:
    """``rcpt``'s events in a tracker's store once its journal is indexed (any interface)."""
    config = load_config(str(config_path))
    store = open_store(config.event_store_url)
    try:
        deadline = time.monotonic() + 20
        while backlog(Path(config.state_dir) / JOURNAL_DIRECTORY, store) > 0:
            assert time.monotonic() < deadline, "journal not indexed"
            time.sleep(0.01)
        return store.query(rcpt=rcpt)
    finally:
        store.close()


@pytest.fixture(scope="module")
def key() -> str:
    return "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsgi(tmp_path_factory, key) -> Iterator[RunningTracker]:
    """The real tracker: its public listener is RSGI."""
    workdir = tmp_path_factory.mktemp("rsgi")
    tracker = {"keys": [key], "workers": 1, "trusted_proxies": ["127.0.0.1/32"]}
    with RunningTracker(workdir, engagement_tracker=tracker) as running:
        yield running


@pytest.fixture(scope="module")
def asgi(tmp_path_factory, key) -> Iterator[tuple[Granian, Path]]:
    """The same app through ASGI, with a store of its own and the same link key."""
    workdir = tmp_path_factory.mktemp("asgi")
    config_path = workdir / "smtpapi-milter.toml"
    tracker = {"keys": [key], "trusted_proxies": ["127.0.0.1/32"]}
    sections = {"engagement_tracker": tracker}
    config_path.write_text(toml(sections, {"state_dir": str(workdir / "state")}))
    server = Granian("asgi_tracker", "asgi", workdir, {CONFIG_ENV: str(config_path)})
    try:
        yield server, config_path
    finally:
        server.stop()


def token(tracker: RunningTracker, kind: str, rcpt: str, **fields: Any) -> str:
    codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
    now = int(time.time())
    return codec.encode(TrackingData(kind, "t1", "m1", rcpt, now, **fields))


def test_every_route_answers_the_same_bytes_as_through_asgi(rsgi, asgi):
    server, _ = asgi
    rcpt = f"same-{uuid.uuid4().hex[:8]}@example.org"
    click = token(rsgi, "click", rcpt, target_url=TARGET)
    opened = token(rsgi, "open", rcpt)
    initial = token(rsgi, "initial_open", rcpt)
    expired = token(rsgi, "click", rcpt, expires=1, target_url=TARGET)
    leave = token(rsgi, "unsubscribe", rcpt)
    tampered = click[:-2] + ("A" if click[-2] != "A" else "B") + click[-1]
    requests = [
        http(method, path)
        for method in ("GET", "HEAD")
        for path in (
            f"/c/{click}",
            f"/c/{click}?utm=1",
            "/c/" + "".join(f"%{b:02X}" for b in click.encode()),  # encoded: still works
            "/c/" + quote("".join(f"%{b:02X}" for b in click.encode())),  # twice: not
            f"/o/{opened}",
            f"/i/{initial}",
            f"/i/{opened}",
            f"/c/{opened}",  # a token on another kind's path
            f"/c/{expired}",
            f"/c/{tampered}",
            "/c/",
            "/c",
            f"/u/{leave}",
            f"/u/{click}",
            "/healthz",
            "/",
            "/nothing/here",
        )
    ]
    requests += [
        http("POST", f"/c/{click}", extra=b"Content-Length: 3\r\n") + b"a=b",
        http("DELETE", f"/o/{opened}"),
        http("OPTIONS", "/healthz"),
        http("PUT", f"/u/{leave}", extra=b"Content-Length: 0\r\n"),
        http("POST", f"/u/{tampered}", extra=b"Content-Length: 3\r\n") + b"a=b",
        http("POST", f"/u/{leave}", extra=b"Content-Length: 26\r\n")
        + b"List-Unsubscribe=One-Click",
    ]
    for request in requests:
        through_rsgi = exchange(rsgi.port, request)
        assert through_rsgi.startswith(b"HTTP/1.1 "), request
        assert through_rsgi == exchange(server.port, request), request
    # Each recorded the same: a click, an open, an initial open, the unsubscribe.
    kinds = sorted(e["type"] for e in events_of(rsgi, rcpt))
    assert kinds == ["click", "initial_open", "list_unsubscribe", "open"]
    assert sorted(e["type"] for e in stored(asgi[1], rcpt)) == kinds


def test_a_user_agent_with_8_bit_bytes_is_stored_as_unreadable(rsgi, asgi):
    """RSGI shows no header value with a byte outside visible ASCII (Granian 2.8: its
    RSGIHeaders skip what hyper's HeaderValue.to_str refuses, with no raw access). ASGI gave
    the bytes; the tracker through RSGI stores U+FFFD, "a user agent nobody can read", not ""
    (no user agent). The click itself is answered and recorded as any other."""
    server, asgi_config = asgi
    for agent, through_asgi in (
        (b"Mozilla/5.0 caf\xc3\xa9", "Mozilla/5.0 caf\u00e9"),  # UTF-8
        (b"Mozilla/5.0 \xe9t\xe9", "Mozilla/5.0 \ufffdt\ufffd"),  # Latin-1
    ):
        rcpt = f"agent-{uuid.uuid4().hex[:8]}@example.org"
        request = http("GET", f"/c/{token(rsgi, 'click', rcpt, target_url=TARGET)}", agent)
        assert exchange(rsgi.port, request) == exchange(server.port, request)
        (event,) = events_of(rsgi, rcpt)
        assert event["user_agent"] == "\ufffd"
        (event,) = stored(asgi_config, rcpt)
        assert event["user_agent"] == through_asgi
    rcpt = f"agent-{uuid.uuid4().hex[:8]}@example.org"  # visible ASCII is kept as it came
    agent = b"Mozilla/5.0 (X11)\t~!@#$%^&*()"
    exchange(rsgi.port, http("GET", f"/o/{token(rsgi, 'open', rcpt)}", agent))
    assert [e["user_agent"] for e in events_of(rsgi, rcpt)] == [agent.decode()]


def test_forwarded_for_with_8_bit_bytes_leaves_the_proxy_as_the_client(rsgi, asgi):
    """From a trusted proxy, an X-Forwarded-For RSGI does not show counts as a hop that is
    no address: the client is the proxy. ASGI read the hops right of the bad one."""
    server, asgi_config = asgi
    for forwarded, client, through_asgi in (
        (b"198.51.100.7", "198.51.100.7", "198.51.100.7"),
        (b"\xe9vil, 198.51.100.7", "127.0.0.1", "198.51.100.7"),
    ):
        rcpt = f"hops-{uuid.uuid4().hex[:8]}@example.org"
        path = f"/o/{token(rsgi, 'open', rcpt)}"
        request = http("GET", path, extra=b"X-Forwarded-For: " + forwarded + b"\r\n")
        assert exchange(rsgi.port, request) == exchange(server.port, request)
        assert [e["ip_address"] for e in events_of(rsgi, rcpt)] == [client]
        assert [e["ip_address"] for e in stored(asgi_config, rcpt)] == [through_asgi]


def test_sigterm_stores_the_folded_counts_of_the_last_second(tmp_path):
    """The recorder is stopped in the worker on SIGTERM (``__rsgi_del__``): folded repeats
    are written at most a second after the first of them, or at the stop."""
    with RunningTracker(tmp_path, engagement_tracker={"workers": 1}) as tracker:
        rcpt = f"fold-{uuid.uuid4().hex[:8]}@example.org"
        request = http("GET", f"/c/{token(tracker, 'click', rcpt, target_url=TARGET)}")
        answers = [exchange(tracker.port, request) for _ in range(3)]
        assert all(a.startswith(b"HTTP/1.1 302 ") for a in answers)
    store = open_store(load_config(str(tracker.config_path)).event_store_url)
    try:
        rows = store.transaction(
            lambda cur: cur.execute("SELECT folded FROM token_floods").fetchall(), write=False
        )
        assert [tuple(row) for row in rows] == [(2,)]
        assert backlog(tmp_path / "state" / JOURNAL_DIRECTORY, store) == 0
    finally:
        store.close()
    assert [e["type"] for e in stored(tracker.config_path, rcpt)] == ["click"]


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory) -> Iterator[Granian]:
    server = Granian("echo_over_rsgi", "rsgi", tmp_path_factory.mktemp("echo"))
    try:
        yield server
    finally:
        server.stop()


def echoed(port: int, request: bytes) -> tuple[bytes, dict]:
    head, _, body = exchange(port, request).partition(b"\r\n\r\n")
    return head, json.loads(body) if body else {}


def test_the_adapter_gives_asgi_the_request(echo_server):
    request = http(
        "POST",
        "/u/a%2Fb%25c%C3%A9?x=1&y=%20z",
        b"caf\xc3\xa9",
        b"X-Two: 1\r\nX-Two: 2\r\nX-Forwarded-For: \xff, 1.2.3.4\r\nContent-Length: 5\r\n",
    )
    head, scope = echoed(echo_server.port, request + b"hello")
    assert head.startswith(b"HTTP/1.1 201 ") and b"\r\nx-echo: yes" in head
    assert scope["type"] == "http" and scope["method"] == "POST" and scope["scheme"] == "http"
    assert scope["http_version"] == "1.1" and scope["root_path"] == ""
    assert scope["path"] == "/u/a/b%c\u00e9"  # decoded once, as ASGI's path is
    # Quoted again: decoding it once more gives the path back (the token decoder does).
    assert scope["raw_path"] == "/u/a/b%25c%C3%A9"
    assert scope["query_string"] == "x=1&y=%20z"
    assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == echo_server.port
    headers = scope["headers"]
    # The values RSGI does not show come first, as one byte nobody reads.
    assert headers[:2] == [["user-agent", "\xff"], ["x-forwarded-for", "\xff"]]
    assert ["x-two", "1"] in headers and ["x-two", "2"] in headers
    assert ["content-length", "5"] in headers
    assert (scope["read"], scope["messages"]) == (5, 2)  # the chunk, then the end


def test_the_adapter_streams_the_body_and_reads_no_more_than_asked(echo_server):
    size = 8 << 20
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=30) as s:
        s.sendall(http("POST", "/?read=4096", extra=f"Content-Length: {size}\r\n".encode()))
        s.sendall(b"x" * 65536)  # a start of the body, the rest never sent
        response = b""
        while b"}" not in response:
            chunk = s.recv(65536)
            assert chunk, response
            response += chunk
    scope = json.loads(response.partition(b"\r\n\r\n")[2])
    assert 4096 <= scope["read"] <= 65536 and scope["messages"] >= 1


def test_the_adapter_answers_head_and_chunked_bodies(echo_server):
    head, scope = echoed(echo_server.port, http("HEAD", "/x"))
    assert head.startswith(b"HTTP/1.1 201 ") and scope == {}
    chunked = b"Transfer-Encoding: chunked\r\n"
    request = http("PUT", "/y", extra=chunked) + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    head, scope = echoed(echo_server.port, request)
    assert scope["read"] == 7 and scope["method"] == "PUT"


def test_the_peer_is_the_address_asgi_gave():
    assert peer("198.51.100.7:40000") == "198.51.100.7"
    assert peer("[2001:db8::1]:40000") == "2001:db8::1"
    assert peer("[::ffff:198.51.100.7]:1") == "::ffff:198.51.100.7"
    assert peer("[fe80::1%2]:40000") == "fe80::1"


def test_a_token_is_percent_decoded_once_in_all():
    assert token_of("/c/AbC-_9") == "AbC-_9"
    # RSGI decoded "%2541" to "%41": the decoder's own decoding must give "%41", not "A".
    assert token_of("/c/%41bC") == "%2541bC"
    assert token_of("/c/a\ufffdb%") == "a%EF%BF%BDb%25"


def slow_start_tracker() -> Any:
    """An RsgiTracker whose start-up takes 2 s (Granian factory for the test below)."""
    from types import SimpleNamespace

    from smtpapi_milter.tracker.rsgi import RsgiTracker

    def startup() -> Any:
        time.sleep(2)
        return SimpleNamespace(client_address=None)

    return RsgiTracker(startup, lambda: None)


def test_a_worker_stopped_during_its_start_up_ends(tmp_path):
    # Granian 2.8.9 can lose a SIGTERM that reaches a worker inside __rsgi_init__: the worker
    # then waits forever and `smtpapi-milter run` never ends. tests/test_install.py caught it
    # (Debian's Python 3.11.2 build: 2 hangs in 5 stops, 0 in 8 with the fix); under this
    # venv's interpreter the race did not show, so this test only holds the new shape: a
    # start-up that runs as the loop's first callback still lets SIGTERM end the worker.
    server = Granian("slow_start_tracker", "rsgi", tmp_path)
    try:
        time.sleep(1.0)  # the worker is in its 2 s start-up
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0, server.log.read_text()
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def test_a_started_worker_freezes_its_start_up_and_collects_less_often():
    # In a process of its own: the GC settings are the whole process's.
    code = (
        "import gc, types\n"
        "from smtpapi_milter.tracker.rsgi import GC_THRESHOLD, RsgiTracker\n"
        "tracker = RsgiTracker(lambda: types.SimpleNamespace(client_address=None), None)\n"
        "tracker._start()\n"
        "assert gc.get_threshold()[0] == GC_THRESHOLD > 700, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 0\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_a_worker_gives_its_app_the_loop_granian_runs_it_on():
    # The recorder creates each click's future on it instead of asking asyncio, whose
    # get_running_loop makes a getpid system call on Python 3.11 (recorder.py). In a process
    # of its own: the start-up freezes the GC of the whole process.
    code = (
        "import asyncio, types\n"
        "from smtpapi_milter.tracker.rsgi import RsgiTracker\n"
        "app = types.SimpleNamespace(client_address=None, loop=None)\n"
        "tracker = RsgiTracker(lambda: app, None)\n"
        "loop = asyncio.new_event_loop()\n"
        "tracker.__rsgi_init__(loop)\n"
        "loop.run_until_complete(asyncio.sleep(0))\n"
        "assert tracker.app is app and app.loop is loop, app.loop\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
