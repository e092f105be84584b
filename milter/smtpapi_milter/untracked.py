"""Why a message (or one recipient's copy) goes out untracked: one list, for every front end.

The pipeline decides; the milter puts the reason in its per-message log line and
``smtpapi-milter rewrite`` prints it on stderr. Each reason has a stable code (for log
queries and tests) and a sentence for people; :class:`Untracked` adds the specifics (a size,
a charset, a content type).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    """Stable codes; :data:`TEXT` says each in words."""

    NO_TRACKING = "no_tracking"
    DKIM_SIGNED = "dkim_signed"
    SIGNED_OR_ENCRYPTED = "signed_or_encrypted"
    UNSAFE_MIME = "unsafe_mime"
    TOO_BIG = "too_big"
    OVER_MTA_LIMIT = "over_mta_limit"
    NO_USABLE_PART = "no_usable_part"
    NOTHING_TO_TRACK = "nothing_to_track"


TEXT = {
    Reason.NO_TRACKING: "no tracking option is on (configuration, X-MSYS-API or policy)",
    Reason.DKIM_SIGNED: "message is already DKIM-signed (track_dkim_signed = false)",
    Reason.SIGNED_OR_ENCRYPTED: "message is signed or encrypted",
    Reason.UNSAFE_MIME: "MIME structure could read differently after a change",
    Reason.TOO_BIG: "message larger than max_tracked_size",
    Reason.OVER_MTA_LIMIT: "message would not fit the MTA's size limit (mta_message_size_limit)",
    Reason.NO_USABLE_PART: "no top text/html or text/plain part can be changed",
    Reason.NOTHING_TO_TRACK: "nothing to track (no trackable link, no pixel asked for)",
}


@dataclass(frozen=True)
class Untracked:
    """One reason, with what makes it specific to this message."""

    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        text = TEXT[self.reason]
        return f"{text}: {self.detail}" if self.detail else text
