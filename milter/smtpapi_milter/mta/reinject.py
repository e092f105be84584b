"""Split mode: personalised copies for the other recipients, re-injected over SMTP.

A tracked link names its recipient, so a transaction with several recipients becomes one
copy per recipient. The first stays in the MTA's transaction; the others go to
``reinject_to`` (a listener without this milter) before we answer, so a failure can still
tempfail the whole message and nothing is lost.
"""

from __future__ import annotations

import smtplib

from ..message_file import HeaderField, MessageFile
from ..pipeline import MessageResult, RecipientCopy


class ReinjectError(Exception):
    """A copy could not be handed over; the whole message must be tempfailed."""


class Reinjector:
    def __init__(self, target: str, timeout: float = 30.0):
        host, _, port = target.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port or 25)
        self.timeout = timeout

    def send(
        self,
        mail_from: str,
        headers: list[tuple[str, bytes]],
        body: bytes,
        result: MessageResult,
        copies: list[RecipientCopy],
    ) -> None:
        message = _message(headers, body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                for copy in copies:
                    data = message.to_bytes(result.header_edits + copy.header_edits, copy.body)
                    refused = smtp.sendmail(mail_from, [copy.recipient], data)
                    if refused:
                        raise ReinjectError(f"{copy.recipient} refused: {refused}")
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise ReinjectError(f"re-injection to {self.host}:{self.port} failed: {exc}") from exc


def _message(headers: list[tuple[str, bytes]], body: bytes) -> MessageFile:
    fields = []
    for name, value in headers:
        # The MTA hands values without the space after the colon; put one back.
        spaced = value if value[:1] in (b" ", b"\t") else b" " + value
        raw = name.encode("latin-1") + b":" + spaced + b"\r\n"
        fields.append(HeaderField(name, value, raw))
    return MessageFile(fields, b"\r\n", body, b"\r\n")
