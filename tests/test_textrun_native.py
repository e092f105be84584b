"""The C scans of _native/textrun.c against their Python references: the common-prefix
length (merge_reuse) on str of every width (a copy may hold a wider character than the one
before) and on bytes, the first bare CR (mime), UTF-8 byte offsets (edits), the search of a
whole body (search) and its lines too long for the wire (qp)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.rewrite import edits, merge_reuse, mime, qp, qp_reuse, search, track

if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":  # the references alone are under test
    pytest.skip("SMTPAPI_PURE_PYTHON=1: no native path to compare", allow_module_level=True)


native = merge_reuse._textrun.common_run
reference = merge_reuse._common_run_reference

# Few distinct characters, so long common runs are likely; one per width class.
chars = st.sampled_from(["a", "b", "é", "Ω", "😀", "\udc80"])


def test_native_is_built_and_chosen():
    assert merge_reuse._common_run is native
    assert qp_reuse._common_run is native


@settings(max_examples=500, deadline=None)
@given(
    st.lists(chars, max_size=700).map("".join),
    st.lists(chars, max_size=700).map("".join),
    st.integers(0, 710),
    st.integers(0, 710),
)
def test_str_matches_reference(a, b, i, j):
    # Half the time b continues a's text, so the runs cross the C side's 256-unit blocks.
    for other in (b, a[i // 2 :] + b):
        assert native(a, i, other, j) == reference(a, i, other, j)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=40), st.integers(0, 2100))
def test_bytes_match_reference(a, tail, i):
    b = a[i:] + tail
    for j in (0, 1, len(b)):
        assert native(a, i, b, j) == reference(a, i, b, j)


def test_long_identical_texts_and_ends():
    a = "x" * 100_000
    assert native(a, 0, a, 0) == 100_000
    assert native(a, 5, a + "y", 0) == 99_995
    assert native(a, 100_000, a, 0) == 0
    assert native(a, 200_000, a, 0) == reference(a, 200_000, a, 0) == 0


def test_refuses_mixed_and_negative():
    with pytest.raises(TypeError):
        native("a", 0, b"a", 0)
    with pytest.raises(ValueError):
        native("a", -1, "a", 0)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\r\r\n", b"x" * 50]), max_size=30))
def test_bare_cr_matches_reference(pieces):
    data = b"".join(pieces)
    found = merge_reuse._textrun.first_bare_cr(data)
    match = mime._BARE_CR.search(data)
    assert found == (match.start() if match else -1)
    assert mime.has_bare_cr(data) == mime.has_bare_cr_reference(data)


def test_bare_cr_across_the_c_sides_64_byte_blocks():
    for at in range(120, 260):  # the CR at every place in and around two blocks
        data = bytearray(b"ab\r\n" * 100)
        data[at] = 13
        data = bytes(data)
        match = mime._BARE_CR.search(data)
        assert merge_reuse._textrun.first_bare_cr(data) == (match.start() if match else -1)
    assert merge_reuse._textrun.first_bare_cr(b"x" * 63 + b"\r\n" + b"y" * 70) == -1


def test_bare_cr_at_the_very_end_and_none():
    assert merge_reuse._textrun.first_bare_cr(b"a\r\nb\r") == 4
    assert merge_reuse._textrun.first_bare_cr(b"a\r\nb\r\n") == -1
    assert merge_reuse._textrun.first_bare_cr(b"") == -1
    with pytest.raises(TypeError):
        merge_reuse._textrun.first_bare_cr("str")


# Text as a UTF-8 part decodes: every width, undecodable bytes as U+DC80..U+DCFF, and long
# ASCII runs (the C side skips them a word at a time).
part_chars = st.sampled_from(["a", "<", "é", "—", "😀", "\udc80", "\udcff", "x" * 9])


@settings(max_examples=500, deadline=None)
@given(st.lists(part_chars, max_size=60).map("".join), st.data())
def test_utf8_spans_match_byte_spans(text, data):
    raw = text.encode("utf-8", "surrogateescape")
    points = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    spans = list(zip(points[::2], points[1::2], strict=False))
    want = edits.byte_spans(text, raw, spans, "utf-8")
    assert edits.decoded_byte_spans(text, raw, spans, "utf-8") == want
    if not text.isascii():
        assert merge_reuse._textrun.utf8_spans(text, spans) == want


def test_utf8_spans_leave_refused_surrogates_and_bad_spans_to_the_reference():
    utf8_spans = merge_reuse._textrun.utf8_spans
    assert utf8_spans("a\ud800b—", [(0, 1)]) is None  # encoding would raise
    assert utf8_spans("ab—", [(2, 1)]) is None
    assert utf8_spans("ab—", [(0, 9)]) is None
    assert utf8_spans("ab—", [(1, 2), (0, 1)]) is None
    for found in (edits.byte_spans, edits.decoded_byte_spans):  # the reference decides
        with pytest.raises(UnicodeEncodeError):
            found("a\ud800b—", b"a", [(0, 1)], "utf-8")


def test_search_and_long_lines_are_built_and_chosen():
    assert search.find is mime.find is track.find is merge_reuse._textrun.find
    assert qp._textrun is merge_reuse._textrun


# Haystacks of a few characters, so needles are often found (or nearly: a prefix of them),
# of every width class (a str's units are 1, 2 or 4 bytes: memmem searches them all).
search_chars = st.sampled_from(["-", "a", "\n", "é", "Ω", "😀"])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(search_chars, max_size=300).map("".join),
    st.lists(search_chars, max_size=6).map("".join),
    st.integers(-320, 320),
    st.integers(-320, 320),
)
def test_find_matches_reference(text, needle, start, end):
    assert search.find(text, needle, start, end) == text.find(needle, start, end)
    if text.isascii() and needle.isascii():  # bytes: always memmem
        data, marker = text.encode(), needle.encode()
        assert search.find(data, marker, start, end) == data.find(marker, start, end)


def test_find_passes_over_matches_inside_a_character():
    # "a" as a 2-byte unit is 61 00; "\u6100\u4100" is 00 61 00 41: those bytes at offset 1.
    assert search.find("\u6100\u4100", "a", 0, 2) == -1
    assert search.find("\u6100\u4100a", "a", 0, 3) == 2
    assert search.find("\U00016100\U00000041a😀", "a😀", 0, 4) == 2  # 4-byte units
    assert search.find("a" * 10, "a" * 65, 0, 10) == -1  # long needles: CPython's find
    assert search.find("Ω" + "a" * 70, "a" * 65, 0, 71) == 1


def test_find_over_a_body_and_its_refusals():
    body = b"x" * 100_000 + b"\r\n-----BEGIN PGP MESSAGE-----\r\n"
    assert search.find(body, b"-----BEGIN PGP ", 0, len(body)) == 100_002
    assert search.find(body, b"-----BEGIN PGP ", 0, 100_016) == -1  # ends inside the range
    assert search.find(body, b"", 7, 3) == b"x".find(b"", 7, 3) == -1
    with pytest.raises(TypeError):
        search.find(body, "x", 0, 1)


line_pieces = st.sampled_from([b"a" * 997, b"a", b"aa", b"\r", b"\n", b"\r\n", b"=\r\n"])


@settings(max_examples=500, deadline=None)
@given(st.lists(line_pieces, max_size=12))
def test_long_lines_match_reference(pieces):
    # Lines of 997-1000 octets, with and without CR before the LF, at the end or not: around
    # the limit, where the reference's windows decide.
    raw = b"".join(pieces)
    assert qp._long_lines(raw) == qp._long_lines_reference(raw)


def test_long_lines_at_the_limit():
    limit = qp.LINE_LIMIT
    assert qp._long_lines(b"a" * limit + b"\r\n" + b"b" * limit) == []
    assert qp._long_lines(b"a" * (limit + 1) + b"\r\nb") == [(0, limit + 3)]
    assert qp._long_lines(b"b\n" + b"a" * limit + b"\r") == [(2, limit + 3)]  # a bare CR counts
    with pytest.raises(ValueError):
        merge_reuse._textrun.long_lines(b"", -1)
