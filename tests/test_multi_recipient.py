"""Which transactions share a body, get split or are deferred (multi_recipient.py)."""

from __future__ import annotations

import pytest

from smtpapi_milter.multi_recipient import defers_extra_recipients, shares_body

REINJECT = "127.0.0.1:10026"


@pytest.mark.parametrize(
    ("mode", "reinject_to", "non_smtp", "recipients", "shared"),
    [
        ("auto", "", False, 1, False),  # one recipient: tracked for that recipient
        ("auto", "", False, 3, True),  # no listener to re-inject to: one body for all
        ("auto", REINJECT, False, 3, False),  # split
        ("auto", REINJECT, True, 3, False),
        ("defer", "", False, 1, False),
        ("defer", "", True, 3, True),  # nobody to ask to retry
        ("split", REINJECT, False, 3, False),
        ("shared", "", False, 1, True),  # as configured: no recipient in links or events
    ],
)
def test_shares_body(mode, reinject_to, non_smtp, recipients, shared):
    assert shares_body(mode, reinject_to, non_smtp, recipients) is shared


def test_only_defer_over_smtp_refuses_a_second_recipient():
    assert defers_extra_recipients("defer", non_smtp=False)
    assert not defers_extra_recipients("defer", non_smtp=True)
    for mode in ("auto", "split", "shared"):
        assert not defers_extra_recipients(mode, non_smtp=False)
