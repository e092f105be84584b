"""Decoding a QP part with an earlier part's pieces (rewrite/decode_reuse.py) gives exactly
``binascii.a2b_qp`` and the charset's text, whatever the edit and however hostile the QP."""

from __future__ import annotations

import binascii
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.rewrite import decode_reuse, mime

from . import corpus
from .test_merge_reuse import merged_copy
from .test_qp_reuse import LINES

# Lines that split a character with a soft break, and bytes that are not UTF-8.
# And a fragment with no break that ends in an escaped line feed and an "=": what follows it
# joins its line, and its "=" reads the next bytes.
MORE_LINES = [
    b"caf=C3=\r\n",
    b"=A9 ok\r\n",
    b"\xc3\r\n",
    b"\xa9\xe2\x80\r\n",
    b"=E2=80=94\n",
    b"=0A=",
]
POOL = LINES + MORE_LINES


@st.composite
def edited_parts(draw):
    """An earlier part and a new one made by replacing, inserting and deleting lines."""
    old = draw(st.lists(st.sampled_from(POOL), min_size=0, max_size=60))
    new: list[bytes] = []
    for line in old:
        action = draw(st.sampled_from(["keep"] * 6 + ["replace", "insert", "delete"]))
        if action in ("insert", "replace"):
            new.append(draw(st.sampled_from(POOL)))
        if action in ("keep", "insert"):
            new.append(line)
    new += draw(st.lists(st.sampled_from(POOL), max_size=2))  # more after the earlier's end
    return b"".join(old), b"".join(new)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=30), st.integers(0, 30))
def test_qp_decodes_line_by_line(lines, cut):
    # The fact the module rests on: decoding stops at each line break.
    raw = b"".join(lines)
    cut = min(cut, len(lines))
    head, tail = b"".join(lines[:cut]), b"".join(lines[cut:])
    if head and not head.endswith(b"\n"):
        return
    assert binascii.a2b_qp(raw) == binascii.a2b_qp(head) + binascii.a2b_qp(tail)


CHARSETS = st.sampled_from(sorted(decode_reuse.CODECS))


@settings(max_examples=800, deadline=None)
@given(
    edited_parts(),
    CHARSETS,
    CHARSETS,
    st.sampled_from([1, 16, 64, decode_reuse.PIECE]),
    st.sampled_from([0, 8, decode_reuse._WINDOW]),
)
def test_decoding_with_an_earlier_parts_pieces_is_decoding_it_whole(
    case, earlier_charset, charset, piece, window
):
    old_raw, raw = case
    with (
        mock.patch.object(decode_reuse, "PIECE", piece),
        mock.patch.object(decode_reuse, "_WINDOW", window),
    ):
        earlier = decode_reuse.decode(old_raw, earlier_charset, None)
        result = decode_reuse.decode(raw, charset, earlier[2] if earlier else None)
    if result is None:  # a piece could not end where a character may go on: decoded whole
        return
    decoded, text, pieces = result
    assert decoded == binascii.a2b_qp(raw)
    assert text == decoded.decode(charset, "surrogateescape")
    assert pieces.raw == raw and (pieces.ends[-1] if pieces.ends else 0) == len(raw)
    assert b"".join(pieces.decoded) == decoded and "".join(pieces.texts) == text


def test_a_character_split_by_a_soft_break_is_not_cut():
    # "é" as =C3=\r\n=A9: the soft break ends a line but not a piece.
    raw = b"x" * 10 + b"=C3=\r\n=A9\r\n" + b"y" * 10 + b"\r\n"
    with mock.patch.object(decode_reuse, "PIECE", 1):
        result = decode_reuse.decode(raw, "utf-8", None)
    assert result is not None
    decoded, text, pieces = result
    assert text == (b"x" * 10 + b"\xc3\xa9\r\n" + b"y" * 10 + b"\r\n").decode()
    assert all(not piece.endswith(b"\xc3") for piece in pieces.decoded)


def _decoded_after(old: bytes, raw: bytes) -> bytes:
    """``raw`` decoded with the pieces of ``old`` (a piece a line), which has two."""
    with mock.patch.object(decode_reuse, "PIECE", 1):
        earlier = decode_reuse.decode(old, "utf-8", None)
        assert earlier is not None and len(earlier[2].ends) == 2
        result = decode_reuse.decode(raw, "utf-8", earlier[2])
    assert result is not None
    return result[0]


def test_a_piece_found_again_mid_line_is_not_taken_over():
    # The earlier part's second line, found right after an "=" that reads its first bytes
    # as an escape: taken over as it decoded at a line start, it would read "3D" for "=".
    raw = b"head=0A=3D tail\r\n"
    assert _decoded_after(b"head\r\n3D tail\r\n", raw) == binascii.a2b_qp(raw)
    assert binascii.a2b_qp(raw) == b"head\n= tail\r\n"


def test_the_earlier_parts_unfinished_last_line_is_not_taken_over_before_more():
    # Its last piece ends in the middle of a line ("=" and all): where the new part goes on
    # after it, the line goes on too, and the "=" reads the next bytes.
    raw = b"x\r\nabc=3D\r\n"
    assert _decoded_after(b"x\r\nabc=", raw) == binascii.a2b_qp(raw) == b"x\r\nabc=\r\n"


def test_an_earlier_part_in_another_charset_is_not_taken_over():
    # Fuzz finding: the same bytes, Latin-1 before and ASCII now; the Latin-1 text taken
    # over held characters ASCII cannot encode, and the byte spans failed on it.
    raw = b"caf=E9\r\n" * 3
    earlier = decode_reuse.decode(raw, "iso8859-1", None)
    assert earlier is not None
    result = decode_reuse.decode(raw, "ascii", earlier[2])
    assert result is not None
    assert result[1] == binascii.a2b_qp(raw).decode("ascii", "surrogateescape")
    assert result[1].encode("ascii", "surrogateescape") == binascii.a2b_qp(raw)


def test_an_unchanged_part_takes_every_piece_over():
    raw = b"".join(LINES[:2] * 400)
    earlier = decode_reuse.decode(raw, "utf-8", None)
    assert earlier is not None
    again = decode_reuse.decode(bytes(raw), "utf-8", earlier[2])
    assert again is not None
    assert all(a is b for a, b in zip(again[2].texts, earlier[2].texts, strict=True))


@corpus.needed
def test_mail_merged_copies_decode_only_what_changed():
    html = corpus.realistic((corpus.CORPUS / "html/colorlib/14__index.html").read_bytes())
    earlier = None
    for reader in range(1, 6):
        copy = merged_copy(html.decode("utf-8", "surrogateescape"), reader)
        message = parse_message_file(corpus.wrap_html(copy.encode(), "quoted-printable"))
        root = mime.parse_body(mime.structure_fields(message.headers), message.body)
        part = mime.top_parts(root)[0]
        assert part is not None
        raw = message.body[part.body_start : part.end]
        result = decode_reuse.decode(raw, "utf-8", earlier)
        assert result is not None
        decoded, text, pieces = result
        assert decoded == binascii.a2b_qp(raw) and text == decoded.decode("utf-8")
        if earlier is not None:
            taken = sum(1 for t in pieces.texts if any(t is e for e in earlier.texts))
            # A greeting, a name in the middle and the reader's links differ: three pieces
            # (and the one or two around each) are decoded again, the rest taken over.
            assert taken >= len(pieces.texts) - 6, (taken, len(pieces.texts))
        earlier = pieces
