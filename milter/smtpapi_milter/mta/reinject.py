"""Split mode: personalised copies for the other recipients, re-injected over SMTP.

A tracked link names its recipient, so a transaction with several recipients becomes one
copy per recipient. The first stays in the MTA's transaction; the others go to
``reinject_to`` (a listener without this milter) before we answer, so a failure can still
tempfail the whole message and nothing is lost.
"""

from __future__ import annotations

import re
import smtplib

from ..message_file import HeaderField, MessageFile
from ..pipeline import MessageResult, RecipientCopy

# The queue id in the listener's reply to the end of DATA: Postfix "2.0.0 Ok: queued as ID",
# Sendmail "2.0.0 ID Message accepted for delivery", Exim "OK id=ID".
_QUEUED_AS = re.compile(
    rb"queued as ([A-Za-z0-9]+)|^(?:\d\.\d{1,3}\.\d{1,3} )?([A-Za-z0-9]+) Message accepted"
    rb"|\bid=([A-Za-z0-9-]+)"
)


def queue_id_of(reply: bytes) -> str:
    """The MTA's queue id in a 250 reply to DATA ('' if the reply does not say one)."""
    match = _QUEUED_AS.search(reply)
    if match is None:
        return ""
    return next(group for group in match.groups() if group).decode("ascii")


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
    ) -> list[str]:
        """Hand every copy over; the listener's queue id of each, in order ('' if unsaid)."""
        message = _message(headers, body)
        queue_ids = []
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                for copy in copies:
                    data = message.to_bytes(result.header_edits + copy.header_edits, copy.body)
                    sender = copy.return_path or mail_from  # bounce_domain: its own
                    queue_ids.append(_send(smtp, sender, copy.recipient or "", data))
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise ReinjectError(f"re-injection to {self.host}:{self.port} failed: {exc}") from exc
        return queue_ids


def _send(smtp: smtplib.SMTP, mail_from: str, recipient: str, data: bytes) -> str:
    """One transaction, as ``SMTP.sendmail`` does it, but keeping the reply to DATA (which
    names the queue id the MTA's log will use for this copy)."""
    smtp.ehlo_or_helo_if_needed()
    code, reply = smtp.mail(mail_from)
    if code != 250:
        smtp.rset()
        raise smtplib.SMTPSenderRefused(code, reply, mail_from)
    code, reply = smtp.rcpt(recipient)
    if code not in (250, 251):
        smtp.rset()
        raise ReinjectError(f"{recipient} refused: {code} {reply.decode('latin-1')}")
    code, reply = smtp.data(data)
    if code != 250:
        smtp.rset()
        raise smtplib.SMTPDataError(code, reply)
    return queue_id_of(reply)


def _message(headers: list[tuple[str, bytes]], body: bytes) -> MessageFile:
    fields = []
    for name, value in headers:
        # The MTA hands values without the space after the colon; put one back.
        spaced = value if value[:1] in (b" ", b"\t") else b" " + value
        raw = name.encode("latin-1") + b":" + spaced + b"\r\n"
        fields.append(HeaderField(name, value, raw))
    return MessageFile(fields, b"\r\n", body, b"\r\n")
