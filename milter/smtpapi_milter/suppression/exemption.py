"""Which suppression entries a recipient's mail is checked against (SPEC 14).

SparkPost's rule: a ``non_transactional`` entry blocks non-transactional mail, a
``transactional`` entry blocks transactional mail, and ``options.skip_suppression`` skips the
check. The flags come from the resolved settings (X-MSYS-API ``options.transactional`` /
``options.skip_suppression``, policy variable ``smtpapi_transactional``); they are read here
only, so the milter's enforcement does not care where they were set.
"""

from __future__ import annotations

from typing import Any

from .store import NON_TRANSACTIONAL, TRANSACTIONAL


def checked_against(settings: Any) -> str | None:
    """The suppression type that blocks this mail, or None when the check is skipped."""
    # getattr: settings without the flags (before the header options existed) are plain
    # non-transactional mail, checked as such.
    if getattr(settings, "skip_suppression", False):
        return None
    return TRANSACTIONAL if getattr(settings, "transactional", False) else NON_TRANSACTIONAL
