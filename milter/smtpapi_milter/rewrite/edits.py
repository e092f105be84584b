"""Edits of a tracked part: where it changes, first in its text, then in its bytes.

The rewrite decides in decoded text (``str`` offsets); the transfer encodings work on the
part's bytes. Carrying each edit over to byte offsets lets the quoted-printable splice keep
every encoded line the edits do not touch. Every untouched stretch of text keeps exactly the
bytes it came from, so the new bytes equal the whole new text encoded at once.
"""

from __future__ import annotations

import codecs
from typing import Any, TypeVar

from .._native import load

TextEdit = tuple[int, int, str]
ByteEdit = tuple[int, int, bytes]
_Seq = TypeVar("_Seq", str, bytes)

ERRORS = "surrogateescape"  # undecodable bytes of the part travel as lone surrogates

# Codecs that encode each character on its own, whatever comes before it (no byte order
# mark, no shift state): a stretch of text encodes to the same bytes alone as in context.
_STATELESS = frozenset(
    {"utf-8", "ascii", "big5", "big5hkscs", "euc_jp", "euc_kr", "gb2312", "gbk", "gb18030"}
    | {"shift_jis", "euc_jis_2004", "euc_jisx0213", "shift_jis_2004", "shift_jisx0213"}
    | {"johab", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"}
)
_STATELESS_FAMILIES = ("iso8859-", "cp", "koi8-", "mac-", "latin", "hp-roman", "tis-620", "kz")


def apply(data: _Seq, edits: list[tuple[int, int, _Seq]]) -> _Seq:
    """``data`` with each ``(start, end, replacement)`` spliced in; edits sorted, apart."""
    pieces = []
    pos = 0
    for start, end, replacement in edits:
        pieces.append(data[pos:start])
        pieces.append(replacement)
        pos = end
    pieces.append(data[pos:])
    return data[:0].join(pieces)


def to_bytes(text: str, data: bytes, edits: list[TextEdit], charset: str) -> list[ByteEdit]:
    """The edits of ``text`` as edits of ``data``, its bytes in ``charset`` (a codec name).

    Raises UnicodeError (or ValueError) when the charset cannot encode a replacement.
    """
    spans = byte_spans(text, data, edits, charset)
    if spans is None:
        return _incremental(text, data, edits, charset)
    return encode_at(spans, edits, charset)


def byte_spans(
    text: str, data: bytes, spans: list[TextEdit] | list[tuple[int, int]], charset: str
) -> list[tuple[int, int]] | None:
    """Where the ``(start, end, ...)`` spans of ``text`` lie in ``data``, its bytes in
    ``charset``; None when the codec keeps state (there a replacement can change how the
    text after it encodes, and only ``to_bytes`` with the replacements knows)."""
    if text.isascii() and len(data) == len(text):
        # One byte per character, none of them shifting state: offsets carry over as they are.
        return [(span[0], span[1]) for span in spans]
    if charset in _STATELESS or charset.startswith(_STATELESS_FAMILIES):
        return _stateless(text, data, spans, charset)
    return None


# Byte offsets of a UTF-8 part's spans in C (_native/textrun.c); SMTPAPI_PURE_PYTHON=1 forces
# byte_spans, the reference.
_textrun: Any = load("textrun")


def decoded_byte_spans(
    text: str, data: bytes, spans: list[tuple[int, int]], charset: str
) -> list[tuple[int, int]] | None:
    """``byte_spans`` for a ``text`` decoded from ``data`` itself with ``charset`` and ERRORS.

    For UTF-8 that decoding encodes back to ``data`` (PEP 383), so the spans' byte offsets
    follow from the text alone: counted in C, without encoding the text again to compare it
    with ``data`` (a mail-merged copy's new body: ~45 us per 90 KB)."""
    if charset == "utf-8" and _textrun is not None and not text.isascii():
        found = _textrun.utf8_spans(text, spans)
        if found is not None:
            return found
    return byte_spans(text, data, spans, charset)


def encode_at(spans: list[tuple[int, int]], edits: list[TextEdit], charset: str) -> list[ByteEdit]:
    """Each edit's replacement in ``charset``, at its place in bytes (from ``byte_spans``)."""
    pairs = zip(spans, edits, strict=True)
    return [(s, e, edit[2].encode(charset, ERRORS)) for (s, e), edit in pairs]


def _stateless(
    text: str, data: bytes, spans: list[TextEdit] | list[tuple[int, int]], charset: str
) -> list[tuple[int, int]] | None:
    """Encode each stretch on its own; None if the stretches do not tile ``data``."""
    out = []
    pos = offset = 0
    for span in spans:
        start, end = span[0], span[1]
        gap = text[pos:start].encode(charset, ERRORS)
        old = text[start:end].encode(charset, ERRORS)
        if not (data.startswith(gap, offset) and data.startswith(old, offset + len(gap))):
            return None
        offset += len(gap)
        out.append((offset, offset + len(old)))
        offset += len(old)
        pos = end
    tail = text[pos:].encode(charset, ERRORS)
    return out if offset + len(tail) == len(data) and data.endswith(tail) else None


def _incremental(text: str, data: bytes, edits: list[TextEdit], charset: str) -> list[ByteEdit]:
    """Any codec: old and new text each through one incremental encoder, stretch by stretch.

    A stateful codec (UTF-7, ISO-2022, a byte order mark) may write an untouched stretch
    differently after a replacement; where the two differ, the difference is an edit too.
    """
    old_encoder = codecs.getincrementalencoder(charset)(ERRORS)
    new_encoder = codecs.getincrementalencoder(charset)(ERRORS)
    out: list[ByteEdit] = []
    written = []
    offset = pos = 0
    for start, end, new in [*edits, (len(text), len(text), None)]:
        final = new is None
        gap = text[pos:start]
        old_gap = old_encoder.encode(gap, final)
        _same_or_edit(out, offset, old_gap, new_encoder.encode(gap, final))
        offset += len(old_gap)
        written.append(old_gap)
        if not final:
            old = old_encoder.encode(text[start:end])
            out.append((offset, offset + len(old), new_encoder.encode(new)))
            offset += len(old)
            written.append(old)
        pos = end
    if b"".join(written) != data:  # the encoder disagrees with itself: change the whole part
        return [(0, len(data), apply(text, edits).encode(charset, ERRORS))]
    return out


def _same_or_edit(out: list[ByteEdit], offset: int, old: bytes, new: bytes) -> None:
    """Record where ``new`` differs from ``old``, which ``data`` holds at ``offset``."""
    if old != new:
        head = _common_prefix(old, new)
        tail = _common_prefix(old[head:][::-1], new[head:][::-1])
        out.append((offset + head, offset + len(old) - tail, new[head : len(new) - tail]))


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
