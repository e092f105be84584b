"""A webhook receiver for tests: a real HTTP server on loopback that records every POST.

It answers as the test tells it: a status code (200, 500, ...) or ``HANG`` (read the request,
then never answer until the receiver stops), per request from a script and then by default.
Tests wait for what they expect with :meth:`WebhookReceiver.wait_until`, which probes on
every arrival instead of sleeping.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = "hang"
Answer = int | str


@dataclass(frozen=True)
class Received:
    """One request as it arrived (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: bytes
    answer: Answer
    at: float  # time.monotonic() when the body had been read

    @property
    def batch_id(self) -> str:
        return self.headers.get("x-messagesystems-batch-id", "")

    def events(self) -> list[dict[str, Any]]:
        """The flat events of the batch (envelopes unwrapped)."""
        return [next(iter(item["msys"].values())) for item in json.loads(self.body)]

    def event_ids(self) -> list[str]:
        return [event["event_id"] for event in self.events()]


class WebhookReceiver:
    """``with WebhookReceiver() as rx: rx.url`` ... stopped after the block."""

    def __init__(self, port: int = 0, default: Answer = 200):
        self.default = default
        self.script: deque[Answer] = deque()
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # A short poll interval: shutdown() waits for it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer_next(self, answers: Iterable[Answer]) -> None:
        """Answer the next requests so, in order; then ``default`` again."""
        with self._changed:
            self.script.extend(answers)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._release.set()  # hung handlers end (without an answer)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def requests(self, path: str | None = None) -> list[Received]:
        with self._changed:
            return [r for r in self.received if path is None or r.path == path]

    def delivered_ids(self, path: str | None = None) -> list[str]:
        """Event ids of every batch answered 2xx, in arrival order (repeats kept)."""
        return [
            event_id
            for r in self.requests(path)
            if isinstance(r.answer, int) and 200 <= r.answer < 300
            for event_id in r.event_ids()
        ]

    def wait_until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``check()`` holds, re-checked on each arrival; AssertionError after
        ``timeout`` seconds naming what arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(r.path, r.answer, r.batch_id[:8]) for r in self.received]
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {got}")
                # Short waits: the condition may depend on state outside the receiver too.
                self._changed.wait(min(remaining, 0.05))

    def _next_answer(self) -> Answer:
        with self._changed:
            return self.script.popleft() if self.script else self.default

    def _record(self, received: Received) -> None:
        with self._changed:
            self.received.append(received)
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                answer = receiver._next_answer()
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._record(Received(self.path, headers, body, answer, time.monotonic()))
                if answer == HANG:
                    receiver._release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; the test inspects .received instead

        return Handler
