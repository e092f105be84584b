"""An HTTP receiver on loopback that answers badly on purpose, one scripted way per request.

Each accepted connection reads the whole request (headers and Content-Length body), then
plays the next script: a list of steps, each ``bytes`` (sent at once), a float (pause that
many seconds), ``TRICKLE(data, gap)`` (sent one byte per ``gap`` seconds) or ``CLOSE``. With
the script list exhausted, ``default`` is played. Every request's body is kept. Pauses end at
once when the server stops, so ``with`` always stops its threads quickly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

CLOSE = "close"
COMPLETE_200 = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", CLOSE]


@dataclass(frozen=True)
class TRICKLE:
    data: bytes
    gap: float


Step = bytes | float | TRICKLE | str


class MisbehavingReceiver:
    """``with MisbehavingReceiver(default=[...]) as rx: rx.url`` ... stopped after the block."""

    def __init__(self, default: list[Step] | None = None):
        self.default = list(default or COMPLETE_200)
        self.scripts: deque[list[Step]] = deque()
        self.requests: list[bytes] = []
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer_next(self, scripts: Iterable[list[Step]]) -> None:
        self.scripts.extend(scripts)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")

    def __enter__(self) -> MisbehavingReceiver:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        # Wake accept() with a connection of our own; then every handler ends its pause.
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            conn, _ = self._server.accept()
            if self._stop.is_set():
                conn.close()
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = read_request(conn)
            except OSError:
                return
            script = self.scripts.popleft() if self.scripts else self.default
            with self._arrived:
                self.requests.append(request)
                self._arrived.notify_all()
            try:
                self._play(conn, script)
            except OSError:
                return  # the client hung up (cut by its deadline): the point of most scripts

    def _play(self, conn: socket.socket, script: list[Step]) -> None:
        for step in script:
            if self._stop.is_set():
                return
            if isinstance(step, bytes):
                conn.sendall(step)
            elif isinstance(step, float):
                self._stop.wait(step)
            elif isinstance(step, TRICKLE):
                for byte in step.data:
                    if self._stop.wait(step.gap):
                        return
                    conn.sendall(bytes([byte]))
            elif step == CLOSE:
                return
        self._stop.wait()  # the script ended without closing: keep the connection open


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
