"""remember_short: repeated short values are worked on once, long ones every time."""

from __future__ import annotations

from smtpapi_milter.envelope import decode_header_value
from smtpapi_milter.memo import remember_short


def test_short_values_are_remembered_long_ones_never_held():
    calls = []

    @remember_short(8, entries=2)
    def upper(value: str) -> str:
        calls.append(value)
        return value.upper()

    assert [upper("subject"), upper("subject")] == ["SUBJECT", "SUBJECT"]
    assert upper("x" * 9) == upper("x" * 9) == "X" * 9
    assert calls == ["subject", "x" * 9, "x" * 9]
    for value in ("a", "b", "subject"):  # two entries: "subject" was pushed out
        upper(value)
    assert calls[-1] == "subject"


def test_header_decoding_is_the_same_remembered_or_not():
    folded = b"=?utf-8?q?Caf=C3=A9?=\r\n =?utf-8?q?_news?="
    long = folded + b" " + b"x" * 1000
    assert decode_header_value(folded) == decode_header_value(folded) == "Café news"
    assert decode_header_value(long) == "Café news " + "x" * 1000
