"""A test MX on loopback that answers each RCPT TO by the recipient's local part, as remote
servers do: ``ok*`` 250, ``full*`` 452 4.2.2 mailbox full, ``unknown*`` 550 5.1.1 user
unknown. ``accept_all()`` turns every later answer into 250 (a mailbox emptied)."""

from __future__ import annotations

import threading
from typing import Any

from smtpapi_milter.sandbox.capture import _BoundController
from smtpapi_milter.sandbox.ports import LOOPBACK

MAILBOX_FULL = "452 4.2.2 <{rcpt}>: Mailbox full"
USER_UNKNOWN = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"


class _Handler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accept_all = False
        self.delivered: list[tuple[str, ...]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options):
        local = address.partition("@")[0].lower()
        with self.lock:
            accept_all = self.accept_all
        if not accept_all and local.startswith("full"):
            return MAILBOX_FULL.format(rcpt=address)
        if local.startswith("unknown"):
            return USER_UNKNOWN.format(rcpt=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.delivered.append(tuple(envelope.rcpt_tos))
        return "250 2.0.0 Ok: queued as MX1"


class AnsweringMX:
    """Use as a context manager; ``port`` is valid inside it."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self._controller = _BoundController(
            self.handler, hostname=LOOPBACK, port=0, server_hostname="mx.test"
        )

    @property
    def port(self) -> int:
        return self._controller.port

    def accept_all(self) -> None:
        with self.handler.lock:
            self.handler.accept_all = True

    def __enter__(self) -> AnsweringMX:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
