"""Keeping a tracked message within the MTA's size limit (``[smtpapi] mta_message_size_limit``).

Postfix refuses a milter's new body that makes the message larger than its
``message_size_limit`` ("552 5.3.4 message file too big"), after the milter recorded the
injection; and tracking a link-dense body can triple it (every short URL becomes a tracking
URL of 100-200 characters). So the pipeline estimates a copy's tracked size before doing the
work (links x the length of this copy's tokens) and checks the exact size after it: a copy
that would not fit goes out untracked.
"""

from __future__ import annotations

from collections.abc import Callable

from ..untracked import Reason, Untracked
from .analysis import PartPlan

# What the MTA counts beyond the header fields and body the milter sees: its own Received
# field and, in Postfix's queue file, the envelope records (sender, recipients, attributes).
MTA_ALLOWANCE = 4096
PER_RECIPIENT = 256
# Estimating costs one token; a message under this share of the limit cannot reach it
# unless it grows more than fourfold, and its rewrite is cheap anyway: only the exact check.
ESTIMATE_FROM_SHARE = 4


def message_size(headers: list[tuple[str, bytes]], body_size: int) -> int:
    """The message's size as the MTA stores it: header fields, blank line, body."""
    return sum(len(name) + len(value) + 4 for name, value in headers) + 2 + body_size


def fits(size: int, limit: int, recipients: int = 1) -> bool:
    """Whether a message of ``size`` bytes stays within the MTA's ``limit`` (0: no limit)."""
    return limit <= 0 or size + MTA_ALLOWANCE + PER_RECIPIENT * recipients <= limit


def worth_estimating(size: int, limit: int) -> bool:
    """Whether to estimate the tracked size before rewriting (see ESTIMATE_FROM_SHARE)."""
    return limit > 0 and size * ESTIMATE_FROM_SHARE > limit


def estimated_size(size: int, parts: list[tuple[PartPlan, str]], tracked_url_length: int) -> int:
    """The tracked message's size, estimated low: every tracked link becomes at least
    ``tracked_url_length`` characters (prefix and this copy's shortest token), base64 parts
    grow by 4/3, quoted-printable soft breaks and pixels are left out. The exact size is
    checked after the rewrite; this only spares the work when the answer is clear."""
    for plan, cte in parts:
        if plan.click_bytes is None:
            continue  # a stateful charset: where the links lie in bytes is not known yet
        growth = plan.clicks * tracked_url_length - plan.click_bytes
        size += growth * 4 // 3 if cte == "base64" else growth
    return size


class MtaSizeLimit:
    """The limit as one message meets it: before analysis, before the rewrite, after it."""

    def __init__(self, limit: int, headers: list[tuple[str, bytes]], body_size: int, rcpts: int):
        self.limit = limit
        self.size = message_size(headers, body_size)
        self.body_size = body_size
        self.recipients = rcpts

    def _over(self, size: int, how: str) -> Untracked | None:
        if fits(size, self.limit, self.recipients):
            return None
        return Untracked(Reason.OVER_MTA_LIMIT, how.format(size) + f", limit {self.limit}")

    def already_over(self) -> Untracked | None:
        """The message does not fit even untracked (the MTA would refuse it anyway)."""
        return self._over(self.size, "already {} bytes untracked")

    def clearly_over(
        self, parts: list[tuple[PartPlan, str]], tracked_url_length: Callable[[], int]
    ) -> Untracked | None:
        """The tracked copy will not fit (estimated): spares the rewrite."""
        if not worth_estimating(self.size, self.limit):
            return None
        estimate = estimated_size(self.size, parts, tracked_url_length())
        return self._over(estimate, "about {} bytes tracked")

    def over_with(self, new_body_size: int) -> Untracked | None:
        """The tracked copy, its body rewritten, does not fit."""
        return self._over(self.size - self.body_size + new_body_size, "{} bytes tracked")
