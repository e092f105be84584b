"""The quoted-printable splice: only the encoded lines an edit touches change."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.rewrite import edits as edit_lists
from smtpapi_milter.rewrite import qp

from .oracle_qp import LINE_LIMIT, check_qp_lines, lines, unfit


def splice(raw: bytes, edits: list[tuple[int, int, bytes]], eol: bytes = b"\r\n") -> bytes:
    """The splice, checked against what holds for any input: it decodes to the edited bytes,
    keeps every line no edit touches, and leaves no line unfit for the wire."""
    decoded = binascii.a2b_qp(raw)
    out = qp.splice(raw, decoded, edits, eol)
    assert binascii.a2b_qp(out) == edit_lists.apply(decoded, edits)
    # Latin-1: one byte, one character, so the edits' offsets serve the oracle as they are.
    check_qp_lines(raw, out, decoded.decode("latin-1"), "latin-1", [e[:2] for e in edits])
    assert not any(map(unfit, lines(out)))
    return out


# Raw bodies made of what trips decoders up: escapes in both cases, broken ones, "==",
# soft breaks with and without CR, "=" CR and junk before the LF, bare CRs, long lines.
raw_units = st.sampled_from(
    [b"a", b"href", b" ", b"\t", b"=3D", b"=3d", b"=0D", b"=0A", b"=", b"==", b"=\r\n", b"=\n"]
    + [b"\r\n", b"\n", b"\r", b"=\rxy\n", b"= \r\n", b"=4", b"=G1", b"\xff", b"x" * 80]
    + [b"y" * 1000]
)
raws = st.lists(raw_units, max_size=40).map(b"".join)


@st.composite
def raw_and_edits(draw):
    raw = draw(raws)
    size = len(binascii.a2b_qp(raw))
    points = sorted(draw(st.lists(st.integers(0, size), max_size=6)))
    edits = []
    for start, end in zip(points[::2], points[1::2], strict=False):
        edits.append((start, end, draw(st.binary(min_size=1, max_size=90))))
    if len(points) % 2:
        edits.append((points[-1], points[-1], b"<img src=x>"))
    return raw, edits


@settings(max_examples=400, deadline=None)
@given(raw_and_edits(), st.sampled_from([b"\r\n", b"\n"]))
def test_any_raw_and_any_edits(case, eol):
    raw, edits = case
    splice(raw, edits, eol)


def _reference_region(raw: bytes, decoded: bytes, region, edits: list, eol: bytes) -> bytes:
    """A region encoded the plain way (the splice's first version, kept as the reference
    for its fast paths): the new decoded bytes split at the part's line breaks, each line
    encoded, a soft break at the end if the region's last line had a break."""
    pieces, pos = [], region.dstart
    for start, end, new in edits:
        pieces += (decoded[pos:start], new)
        pos = end
    data = b"".join([*pieces, decoded[pos : region.dend]])
    if data.endswith(eol) and data.find(eol) == len(data) - len(eol):
        encoded = qp._encode_line(data[: -len(eol)])
        return (encoded if eol == b"\n" else encoded.replace(b"\n", eol)) + eol
    lines = [qp._encode_line(line).replace(b"\n", eol) for line in data.split(eol)]
    encoded = eol.join(lines)
    if region.end > region.start and raw[region.end - 1] == 10 and not encoded.endswith(b"\n"):
        encoded = qp._soft_ended(encoded, eol)
    return encoded


def _general_splice(raw: bytes, decoded: bytes, edits: list, eol: bytes) -> bytes:
    """The splice with every region through ``_reference_region``."""
    pieces, pos, taken = [], 0, 0
    for region in qp.regions(raw, edits):
        mine = edits[taken : taken + region.edit_count]
        pieces += [raw[pos : region.start], _reference_region(raw, decoded, region, mine, eol)]
        taken, pos = taken + region.edit_count, region.end
    return b"".join([*pieces, raw[pos:]])


@settings(max_examples=400, deadline=None)
@given(raw_and_edits(), st.sampled_from([b"\r\n", b"\n"]))
def test_fast_paths_write_what_the_plain_encoding_writes(case, eol):
    raw, edits = case
    decoded = binascii.a2b_qp(raw)
    assert qp.splice(raw, decoded, edits, eol) == _general_splice(raw, decoded, edits, eol)


@settings(max_examples=400, deadline=None)
@given(raw_and_edits(), st.sampled_from([b"\r\n", b"\n"]))
def test_a_splice_made_ready_once_fills_as_the_splice(case, eol):
    # Each copy of a body fills the plan's Splice with its own replacements: the same bytes
    # as splicing its edits, whatever the replacements.
    raw, edits = case
    decoded = binascii.a2b_qp(raw)
    found = qp.regions(raw, edits)
    ready = qp.Splice(raw, decoded, found, edits, eol)
    for replaced in (edits, [(s, e, new[::-1] + b"\n") for s, e, new in edits]):
        want = qp.splice_regions(raw, decoded, found, replaced, eol)
        assert ready.fill([new for _, _, new in replaced]) == want


def test_soft_broken_lines_around_a_change_stay_as_written():
    raw = b'<p>one=\r\n two=\r\n <a href=3D"https://x.example/">x</a>=\r\n three=\r\n four</p>'
    decoded = binascii.a2b_qp(raw)
    start = decoded.index(b"https")
    out = splice(raw, [(start, start + 18, b"http://t.example/c/tok")])
    assert out.startswith(b"<p>one=\r\n two=\r\n ")
    assert out.endswith(b"\r\n three=\r\n four</p>")


def test_change_across_a_soft_break_takes_both_lines():
    raw = b'<a href=3D"https://x.ex=\r\nample/">x</a>\r\nkept\r\n'
    decoded = binascii.a2b_qp(raw)
    start = decoded.index(b"https")
    out = splice(raw, [(start, start + 18, b"http://t.example/c/tok")])
    assert out == b'<a href=3D"http://t.example/c/tok">x</a>\r\nkept\r\n'


def test_pixel_at_the_end_of_a_part_without_a_last_line_break():
    raw = b"kept\r\n</body></html>"
    out = splice(raw, [(len(raw), len(raw), b"<img>")])
    assert out == b"kept\r\n</body></html><img>"


def test_pixel_after_a_last_line_break_leaves_the_line_alone():
    out = splice(b"kept\r\nlast\r\n", [(12, 12, b"<img>")])
    assert out == b"kept\r\nlast\r\n<img>"


def test_a_line_break_replaced_keeps_the_next_line_a_line():
    # A change that ends a line without its line break (a newline inside an href value)
    # must still end the encoded line, or the next line would run on after it.
    raw = b'x=\r\n<a href=3D"https://a\r\n">\r\nkept\r\n'
    decoded = binascii.a2b_qp(raw)
    start = decoded.index(b"https")
    out = splice(raw, [(start, start + 11, b"http://t/")])
    assert out.endswith(b'">\r\nkept\r\n') and out.startswith(b"x=\r\n")


def test_full_last_line_gets_its_soft_break_within_76():
    raw = b"a=\r\nb\r\n"  # "a", soft break, "b"
    out = splice(raw, [(0, 1, b"y" * 76)])
    assert out == b"y" * 75 + b"=\r\ny=\r\nb\r\n"
    out = splice(raw, [(0, 1, b"y" * 73 + b"\xff")])
    assert out == b"y" * 73 + b"=\r\n=FF=\r\nb\r\n"


@pytest.mark.parametrize(
    ("line", "long"),
    [
        (b"x" * LINE_LIMIT + b"\r\n", False),
        (b"x" * LINE_LIMIT + b"\n", False),
        (b"x" * (LINE_LIMIT + 1) + b"\n", True),
        (b"x" * (LINE_LIMIT + 1) + b"\r\n", True),
        (b"x" * LINE_LIMIT, False),
        (b"x" * (LINE_LIMIT + 1), True),
    ],
)
def test_lines_over_998_octets_are_found_exactly(line, long):
    after = b"tail\r\n" if line.endswith(b"\n") else b""  # a line with no break ends the part
    for raw in (line, b"ab\r\n" + line, b"a" * 500 + b"\r\n" + line + after):
        found = qp._unfit_lines(raw, bare_cr=True)
        start = raw.index(line)
        expected = [(start, start + len(line))] if long else []
        assert [f for f in found if f[0] == start] == expected, raw[:10]


def test_unfit_lines_are_encoded_anew_once_the_part_changes():
    raw = b"bare\rcr\r\n" + b"z" * 1200 + b"\r\nfine\r\nchange me\r\n"
    decoded = binascii.a2b_qp(raw)
    start = decoded.index(b"change")
    out = splice(raw, [(start, start + 6, b"changed")])
    assert out.startswith(b"bare=0Dcr\r\n")
    assert b"\r\nfine\r\nchanged me\r\n" in out


def test_lone_lf_after_a_full_line_keeps_lines_within_76():
    # b2a_qp's binary mode wrote 76 characters and then "=" before the =0A of an LF that
    # follows them: a line of 77. A lone LF is data in a CRLF part (hypothesis found it).
    raw = b"a\r\nb=\r\n"
    out = splice(raw, [(3, 4, b"y" * 76 + b"\n")])
    assert out == b"a\r\n" + b"y" * 75 + b"=\r\ny=\r\n=0A=\r\n"


def test_oracle_lets_an_unchanged_part_keep_unfit_lines() -> None:
    # Fuzz finding (the oracle's, not the library's): a QP text part with no link, holding a
    # long line with a bare CR, went out untouched, and the oracle wanted that line re-encoded.
    raw = b"a" * 70 + b"=\r\xf6" + b"b" * 20 + b"\r\nend\r\n"
    assert check_qp_lines(raw, raw, binascii.a2b_qp(raw).decode("latin-1"), "latin-1", []) == 0
    with pytest.raises(AssertionError, match="over 76"):
        check_qp_lines(raw, raw + b"x", binascii.a2b_qp(raw).decode("latin-1"), "latin-1", [])
