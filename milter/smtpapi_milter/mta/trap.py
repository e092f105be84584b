"""The callback boundary: no exception leaves a milter callback.

pymilter answers an exception that escapes a callback with an anonymous ``451 4.3.0
pymilter: untrapped exception`` and prints the traceback to stderr, where nothing joins it to
a queue id (seen once in a milter benchmark). Every callback of the adapter is wrapped by
:func:`trapped`: the exception is logged with the queue id and its traceback, and the message
gets our own documented ``451 4.3.0`` (SPEC 8), so the client retries and nothing is lost.

Always a temporary failure, whatever ``[milter] on_error`` says: after an exception at this
boundary the adapter's own state is unknown (headers half collected, a body spool that failed,
edits half handed to the MTA), so sending the message on "as it came" could send it wrong.
The failures the pipeline reports (policies, stores, invalid headers) are decided one level
down, in ``SmtpapiMilter._guard``, and follow ``on_error`` there.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any, Protocol

import Milter
import structlog

from ..replies import SmtpReply, internal_error

log = structlog.get_logger("smtpapi_milter.milter")

INTERNAL: SmtpReply = internal_error().reply


class Answer(enum.Enum):
    """When the MTA reads a callback's verdict."""

    NOW = "now"  # connect, helo, mail, rcpt, eom: the reply goes out at once
    # header, eoh, body are @Milter.noreply (the MTA reads no reply, so answering would be a
    # protocol error): the failure waits for end of message, the next step that replies.
    AT_EOM = "at end of message"
    NEVER = "never"  # abort, close: libmilter ignores the verdict


class Trappable(Protocol):
    untrapped_stage: str | None

    def getsymval(self, name: str) -> Any: ...
    def queue_id(self) -> str: ...
    def tempfail(self, stage: str, reply: SmtpReply) -> int: ...


def trapped(stage: str, answer: Answer = Answer.NOW) -> Callable:
    """Decorator for a milter callback: an exception becomes a logged ``451 4.3.0``."""

    def wrap(callback: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(callback)
        def guarded(milter: Trappable, *args: Any) -> int:
            if answer is Answer.AT_EOM and milter.untrapped_stage is not None:
                # The message is already failed: one traceback is enough, not one per chunk.
                return Milter.CONTINUE
            try:
                return callback(milter, *args)
            except Exception:
                return _failed(milter, stage, answer)

        return guarded

    return wrap


def _failed(milter: Trappable, stage: str, answer: Answer) -> int:
    log.exception("untrapped exception", stage=stage, queue_id=_queue_id(milter))
    if answer is Answer.AT_EOM:
        milter.untrapped_stage = stage
        return Milter.CONTINUE
    if answer is Answer.NEVER:
        return Milter.CONTINUE
    return answer_failure(milter, stage)


def answer_failure(milter: Trappable, stage: str) -> int:
    """Tempfail with our ``451 4.3.0``; if even the reply cannot be set (the MTA's side of the
    connection gone, say), a bare TEMPFAIL: the MTA's own 4xx, still never a loss."""
    try:
        return milter.tempfail(stage, INTERNAL)
    except Exception:
        log.exception("reply not set", stage=stage, queue_id=_queue_id(milter))
        return Milter.TEMPFAIL


def _queue_id(milter: Trappable) -> str:
    # Postfix names the queue file only once a recipient is accepted, so before DATA the
    # envelope may not know it yet; libmilter may, and the log line is worth it.
    try:
        return milter.queue_id() or milter.getsymval("i") or ""
    except Exception:
        return ""
