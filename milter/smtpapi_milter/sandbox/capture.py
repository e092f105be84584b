"""The final destination in end-to-end tests: an SMTP server that keeps every message as sent.

Postfix relays everything to it, so what a test reads here is exactly what a recipient's
server would get. The raw DATA bytes are kept (aiosmtpd's ``envelope.original_content``:
dot-unstuffed, CRLF line ends untouched, nothing decoded), because byte-identity of the body
is what the end-to-end tests assert. Tests wait for deliveries on a condition variable, so a
message is seen the moment it lands, and can tell the server to refuse the next messages to
exercise the MTA's retry path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from .ports import LOOPBACK

ACCEPTED = "250 2.0.0 OK: captured"
DEFAULT_REFUSAL = "451 4.3.0 capture server told to refuse this message"


@dataclass(frozen=True)
class Captured:
    """One message as the capture server received it.

    ``data`` is the DATA content exactly as sent after dot-unstuffing (CRLF kept);
    ``received_at`` is a ``time.monotonic()`` value, for rates and latencies.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: float

    @property
    def header_block(self) -> bytes:
        """The header section, up to and including the CRLF that ends its last field."""
        end = self.data.find(b"\r\n\r\n")
        return self.data if end < 0 else self.data[: end + 2]

    @property
    def body(self) -> bytes:
        """Everything after the blank line that ends the headers (empty if there is none)."""
        end = self.data.find(b"\r\n\r\n")
        return b"" if end < 0 else self.data[end + 4 :]


class _Handler:
    """aiosmtpd handler: records or refuses each message, and wakes waiters."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.messages: list[Captured] = []
        self.refused: list[Captured] = []
        self.refusals: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = Captured(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            received_at=time.monotonic(),
        )
        with self.condition:
            if self.refusals:
                self.refused.append(message)
                reply = self.refusals.pop(0)
            else:
                self.messages.append(message)
                reply = ACCEPTED
            self.condition.notify_all()
        return reply


class _BoundController(Controller):
    """A Controller that binds port 0 and learns the port the kernel chose.

    Binding first and reading the port back leaves no window for another process to take
    the port between choosing and binding it.
    """

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class CaptureServer:
    """An SMTP server on 127.0.0.1 (port chosen by the kernel) that stores what it receives.

    Use as a context manager; ``port`` is valid inside the ``with`` block. ``data_size_limit``
    (bytes, ``None`` for no limit) is the largest message it accepts.
    """

    def __init__(self, *, data_size_limit: int | None = 256 * 1024 * 1024) -> None:
        self._handler = _Handler()
        self._controller = _BoundController(
            self._handler,
            hostname=LOOPBACK,
            port=0,
            server_hostname="capture.test",
            data_size_limit=data_size_limit,
        )

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The TCP port the server listens on (only meaningful once started)."""
        return self._controller.port

    def start(self) -> CaptureServer:
        """Start listening; returns once the server has answered a connection."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening and end the server's thread."""
        self._controller.stop()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def messages(self) -> list[Captured]:
        """A copy of the messages accepted so far, in arrival order."""
        with self._handler.condition:
            return list(self._handler.messages)

    @property
    def refused(self) -> list[Captured]:
        """A copy of the messages refused (by ``refuse_next``) so far, in arrival order."""
        with self._handler.condition:
            return list(self._handler.refused)

    def clear(self) -> None:
        """Forget the messages accepted and refused so far."""
        with self._handler.condition:
            self._handler.messages.clear()
            self._handler.refused.clear()

    def refuse_next(self, count: int, reply: str = DEFAULT_REFUSAL) -> None:
        """Answer ``reply`` (a full SMTP reply line, e.g. "451 4.3.0 busy") at end of DATA
        to the next ``count`` messages instead of accepting them; replaces any refusals still
        pending, so ``refuse_next(0)`` accepts again."""
        if not reply[:3].isdigit() or reply[0] not in "45":
            raise ValueError(f"not an SMTP error reply: {reply!r}")
        with self._handler.condition:
            self._handler.refusals[:] = [reply] * count

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Captured]:
        """Wait until at least ``count`` messages were accepted; return all accepted so far.

        Raises ``TimeoutError`` after ``timeout`` seconds, saying how many arrived.
        """
        handler = self._handler
        with handler.condition:
            if not handler.condition.wait_for(lambda: len(handler.messages) >= count, timeout):
                raise TimeoutError(
                    f"{len(handler.messages)} of {count} messages captured "
                    f"({len(handler.refused)} refused) within {timeout} s"
                )
            return list(handler.messages)
