"""Which suppression entries a recipient's mail is checked against (SPEC 14).

SparkPost's rule: a ``non_transactional`` entry blocks non-transactional mail, a
``transactional`` entry blocks transactional mail, and ``options.skip_suppression`` skips the
check. The flags come from the resolved settings (X-MSYS-API ``options.transactional`` /
``options.skip_suppression``, policy variable ``smtpapi_transactional``); they are read here
only, so the milter's enforcement does not care where they were set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .store import NON_TRANSACTIONAL, TRANSACTIONAL

if TYPE_CHECKING:
    from ..settings import TrackingSettings


def checked_against(settings: TrackingSettings | None) -> str | None:
    """The suppression type that blocks this mail, or None when the check is skipped.

    ``settings`` None: never read (a message failing open after an error), so checked as the
    mail most lists are about, non-transactional.
    """
    if settings is None:
        return NON_TRANSACTIONAL
    if settings.skip_suppression:
        return None
    return TRANSACTIONAL if settings.transactional else NON_TRANSACTIONAL
