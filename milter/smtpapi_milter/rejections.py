"""``policy_rejection`` events: the milter refused a message or a recipient (SPEC 13).

A refusal is a policy's when the client is told its mail is unacceptable (550 5.6.0 for a bad
X-MSYS-API header or context value, a policy's reject or tempfail verdict, 452 4.5.3 for a
recipient deferred to its own transaction, a suppressed recipient): one event per recipient
it concerns. Our own trouble (the X.3.x replies: store down, internal error, restarting,
no transmission id) is not a policy and records nothing: the client retries the same mail.

Built only on a refusal, from what the session learnt before it (campaign, tags and metadata
of a header that parsed, the transmission id if one was made, the queue id once the MTA
gave it): accepted mail pays nothing for this.
"""

from __future__ import annotations

import email.utils
from typing import TYPE_CHECKING, Any

from . import context as cv
from .events.model import policy_rejection_event
from .policy import PolicyVerdict
from .replies import SmtpReplyError

if TYPE_CHECKING:
    from .pipeline import Session

# Stages with a message to speak of: a refused connection or HELO has no sender yet.
MESSAGE_STAGES = ("mail", "rcpt", "eom")


def is_policy_refusal(error: SmtpReplyError) -> bool:
    """Whether a refusal is a verdict on the mail (recorded) or our own trouble (not)."""
    if isinstance(error, PolicyVerdict):
        return True  # whatever code the policy chose
    parts = error.reply.status.split(".")
    return not (len(parts) == 3 and parts[1] == "3")  # X.3.x: mail system status


def rejection_events(
    session: Session,
    stage: str,
    raw_reason: str,
    recipient: str | None,
    now: float,
) -> list[dict[str, Any]]:
    """The events for one refusal at ``stage``: the refused ``recipient`` at RCPT (or at end
    of message, one suppressed recipient), every recipient of the transaction for a message
    refused at end of message, the message alone (no recipient) at MAIL. ``raw_reason`` is
    the reply line the client got (or would have, for a recipient removed from a message)."""
    if stage not in MESSAGE_STAGES:
        return []
    envelope = session.envelope
    if stage == "eom" and recipient is None:
        recipients: list[str | None] = list(envelope.recipients) or [None]
    else:
        recipients = [recipient]
    known = _known_settings(session)
    from_header = envelope.header("From") or ""
    ids = session.pipeline.ids
    return [
        policy_rejection_event(
            event_id=ids.event_id(),
            now=now,
            raw_reason=raw_reason,
            rcpt_to=rcpt,
            msg_from=envelope.mail_from,
            transmission_id=session.transmission_id,
            mta_queue_id=envelope.queue_id,
            subject=envelope.header("Subject") or "",
            friendly_from=email.utils.parseaddr(from_header)[1] or from_header,
            **known,
        )
        for rcpt in recipients
    ]


def _known_settings(session: Session) -> dict[str, Any]:
    """Campaign, tags, metadata and customer as far as they are known and valid: the header
    (or a context variable) may be the very thing that was refused."""
    header, variables = session.header, session.message_vars
    campaign = variables.get(cv.CAMPAIGN_ID) or (header.campaign_id if header else None) or ""
    metadata = header.metadata if header else None
    try:
        cv.check_campaign_id(campaign)
    except SmtpReplyError:
        campaign = ""
    try:
        if metadata is not None:
            cv.check_metadata(metadata)
    except SmtpReplyError:
        metadata = None
    tags = [t for t in (header.tags or []) if isinstance(t, str)] if header else []
    return {
        "campaign_id": campaign,
        "customer_id": variables.get(cv.CUSTOMER_ID, ""),
        "tags": tags[: cv.TAGS_PER_RECIPIENT],
        "metadata": metadata,
    }
