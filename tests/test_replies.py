"""Reply texts as libmilter takes them (replies.milter_text)."""

from __future__ import annotations

import pytest

from smtpapi_milter.replies import MILTER_TEXT_LIMIT, milter_text

# The 900th character of the doubled text is the first '%' of a pair: the old cut after
# doubling left it alone, and libmilter refused the reply.
SALE = "Sorry " + "50% off " * 125


def test_cut_never_splits_a_doubled_percent():
    assert SALE.replace("%", "%%")[:MILTER_TEXT_LIMIT].endswith("50%")  # the trap is set
    text = milter_text(SALE)
    assert len(text) <= MILTER_TEXT_LIMIT
    assert text.endswith("50") and text.replace("%%", "").count("%") == 0
    assert text.replace("%%", "%") == SALE[: len(text.replace("%%", "%"))]


@pytest.mark.parametrize("filler", range(8))
def test_every_cut_position_keeps_pairs(filler):
    text = milter_text("x" * filler + "%" * 1000)
    assert len(text) <= MILTER_TEXT_LIMIT and text.replace("%%", "").strip("x") == ""


def test_controls_and_non_ascii_become_printable():
    assert milter_text("a\r\nb\x00c\u00e9%") == "a  b c?%%"
