"""Suppressed recipients leave the message at end of message (SPEC 14).

The pipeline decides here which recipients are suppressed for this kind of mail; the front
end applies it (the milter removes them with ``delrcpt`` and records one ``policy_rejection``
each). When no recipient remains the whole message is refused with 550 5.7.1, so the client
learns it was not sent rather than seeing it vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..replies import SmtpReply, SmtpReplyError
from .exemption import TRANSACTIONAL, checked_against


class SuppressionCheck(Protocol):
    def suppressed(self, recipients: Sequence[str], *, transactional: bool) -> dict[str, str]:
        """The suppressed ones among ``recipients`` with their sources; StoreUnavailable."""
        ...


@dataclass(frozen=True)
class Suppressed:
    """A recipient removed from the message because the list holds it."""

    recipient: str
    source: str

    @property
    def reply(self) -> SmtpReply:
        return suppressed_reply(self.source)


def suppressed_reply(source: str) -> SmtpReply:
    why = f" ({source})" if source else ""
    return SmtpReply("550", "5.7.1", f"recipient is on the suppression list{why}")


EVERY_RECIPIENT_SUPPRESSED = SmtpReply("550", "5.7.1", "every recipient is on the suppression list")


def suppressed_recipients(
    check: SuppressionCheck, recipients: Sequence[tuple[str | None, Any]]
) -> list[Suppressed]:
    """The suppressed among ``recipients`` (each with its resolved settings).

    Raises SmtpReplyError (550 5.7.1) when every recipient is; StoreUnavailable when the list
    cannot be read (the front end tempfails: never send to a possibly suppressed recipient).
    """
    by_kind: dict[str, list[str]] = {}
    for recipient, settings in recipients:
        kind = checked_against(settings)
        if recipient is not None and kind is not None:
            by_kind.setdefault(kind, []).append(recipient)
    sources: dict[str, str] = {}
    for kind, group in by_kind.items():  # at most two lookups: one per kind of mail
        sources.update(check.suppressed(group, transactional=kind == TRANSACTIONAL))
    if not sources:
        return []
    suppressed = [Suppressed(r, sources[r]) for r, _ in recipients if r in sources]
    if len(suppressed) == len(recipients):
        reply = suppressed[0].reply if len(suppressed) == 1 else EVERY_RECIPIENT_SUPPRESSED
        raise SmtpReplyError(reply)
    return suppressed
