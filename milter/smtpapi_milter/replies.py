"""SMTP replies the pipeline can end a message with (SPEC 8).

The pipeline never talks to an MTA; it raises :class:`SmtpReplyError` and the front end
(milter, ``rewrite`` CLI) turns it into ``setreply`` or a line on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmtpReply:
    """A complete SMTP reply: basic code, enhanced status code and human text."""

    code: str
    status: str
    text: str

    def __post_init__(self) -> None:
        if len(self.code) != 3 or not self.code.isdigit() or self.code[0] not in "245":
            raise ValueError(f"bad SMTP reply code {self.code!r}")
        if self.status and self.status[0] != self.code[0]:
            raise ValueError(f"enhanced status {self.status!r} does not match code {self.code}")

    @property
    def is_permanent(self) -> bool:
        return self.code.startswith("5")

    @property
    def is_temporary(self) -> bool:
        return self.code.startswith("4")

    def __str__(self) -> str:
        return " ".join(p for p in (self.code, self.status, self.text) if p)


class SmtpReplyError(Exception):
    """Ends processing of a message (or recipient) with an SMTP reply."""

    def __init__(self, reply: SmtpReply):
        super().__init__(str(reply))
        self.reply = reply


def invalid(text: str) -> SmtpReplyError:
    """550 5.6.0: the X-MSYS-API header or a context variable is unusable."""
    return SmtpReplyError(SmtpReply("550", "5.6.0", text))


def internal_error(text: str = "smtpapi internal error, try again later") -> SmtpReplyError:
    """451 4.3.0: a policy raised or something inside us failed; the client retries."""
    return SmtpReplyError(SmtpReply("451", "4.3.0", text))


TRANSMISSION_ID_UNAVAILABLE = SmtpReply(
    "421", "4.3.3", "[internal] smtpapi unable to generate unique transmission id"
)
EXTRA_RECIPIENT_DEFERRED = SmtpReply(
    "452", "4.5.3", "Too many recipients for one tracked message, send the rest separately"
)

# libmilter takes at most ~980 characters of reply text; we stay well below.
MILTER_TEXT_LIMIT = 900
_CONTROLS = dict.fromkeys([*range(32), 127], " ")


def milter_text(text: str, limit: int = MILTER_TEXT_LIMIT) -> str:
    """``text`` as libmilter's smfi_setreply takes it: one line of printable ASCII with
    every ``%`` doubled, at most ``limit`` characters.

    pymilter refuses a NUL (the verdict became an anonymous 451), and libmilter refuses a
    text with a lone ``%``: the cut after doubling must never split a ``%%`` pair.
    """
    text = text.encode("ascii", "replace").decode("ascii").translate(_CONTROLS)
    escaped = text.replace("%", "%%")[:limit]
    trailing = len(escaped) - len(escaped.rstrip("%"))
    return escaped[:-1] if trailing % 2 else escaped
