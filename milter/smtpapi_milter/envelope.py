"""What the MTA tells us about one SMTP transaction, independent of how it told us."""

from __future__ import annotations

import email.header
from dataclasses import dataclass, field

from .memo import remember_short
from .xmsysapi import unfold


@dataclass(frozen=True)
class HeaderEdit:
    """A change to the message header: ``value`` None deletes the ``index``-th (1-based)
    field called ``name``; ``index`` 0 adds a new field."""

    name: str
    index: int
    value: bytes | None


@dataclass
class Envelope:
    """Connection and transaction facts, filled in as the SMTP dialogue goes on.

    ``headers`` keeps each header's raw value bytes as the MTA sent them (folds included),
    in order, so that nothing we do not mean to change can change.
    """

    client_address: str = ""
    client_name: str = ""
    helo: str = ""
    mail_from: str = ""
    recipients: list[str] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # Mail the MTA did not get over SMTP (Postfix's sendmail command): no client to defer.
    non_smtp: bool = False

    @property
    def queue_id(self) -> str:
        return self.macros.get("i", "")

    @property
    def listener(self) -> str:
        """The MTA listener's name (Postfix ``milter_macro_daemon_name``)."""
        return self.macros.get("{daemon_name}", "")

    @property
    def auth_user(self) -> str:
        return self.macros.get("{auth_authen}", "")

    def raw_headers(self, name: str) -> list[bytes]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def header(self, name: str) -> str | None:
        """The first header called ``name``, unfolded and RFC 2047-decoded, or None."""
        values = self.raw_headers(name)
        return decode_header_value(values[0]) if values else None

    def reset_transaction(self) -> None:
        """Forget the message (after RSET or end of message); keep the connection facts."""
        self.mail_from = ""
        self.recipients = []
        self.headers = []


# A campaign's From and Subject come in every message; 998 octets is one line's worth.
@remember_short(998)
def decode_header_value(raw: bytes) -> str:
    """Human-readable text of a header value: unfolded, encoded-words decoded.

    Never raises: a policy reading a malformed header gets the best text we can make.
    """
    text = unfold(raw).decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    # MessageError covers CharsetError: a charset name with non-ASCII bytes in it.
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError):
        return text
