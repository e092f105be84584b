"""Decode a quoted-printable part by reusing the decoding of a similar earlier part.

Mail-merged copies of a campaign differ in a few short spans (rewrite/merge_reuse.py reuses
the HTML scan across them, rewrite/qp_reuse.py the QP regions); decoding each copy's part
from scratch still read all of it twice: ``binascii.a2b_qp`` and the charset's decoder
(the mail-merge bench's 94 KB HTML part: 51 + 24 us a copy). Here a part is decoded in
pieces of about ``PIECE`` bytes, kept with the part, and a new part takes over every piece
of the earlier one that it holds unchanged (wherever it now lies), decoding only the rest.

It must give exactly ``a2b_qp(raw)`` and its text (tests/test_decode_reuse.py checks it by
hypothesis, on random edits and hostile QP), and rests on two facts:

* ``a2b_qp`` decodes line by line: what it makes of an "=" never reaches past the line's
  break (CPython's binascii.c: a soft break skips to the "\\n" and no further; "=X" before a
  line break is kept as it is). So for raw bytes ``a`` that end with "\\n",
  ``a2b_qp(a + b) == a2b_qp(a) + a2b_qp(b)``: a piece is the same bytes wherever it lies.
* The pieces are cut where the decoded bytes end with "\\n" (a hard line break, not a soft
  one). For the codecs this module takes (``CODECS``: UTF-8, ASCII, Latin-1, decoded with
  surrogateescape), no character spans an ASCII byte, so the text of the whole is the texts
  of the pieces joined. Other charsets (stateful ones, UTF-16) are decoded whole.
"""

from __future__ import annotations

import binascii

CODECS = frozenset({"utf-8", "ascii", "iso8859-1"})
PIECE = 4096  # bytes of raw part per piece, about (cut at the next hard line break)
# A changed piece: the next few earlier pieces are looked for this far ahead (past the
# changed piece's own length) in the new part.
_LOOK_AHEAD = 3
_WINDOW = 4096


class Pieces:
    """A quoted-printable part's raw bytes cut into pieces, each with its decoded bytes and
    text in ``charset``: piece ``i`` is ``raw[ends[i - 1]:ends[i]]`` (from 0 for the first)."""

    __slots__ = ("charset", "decoded", "ends", "raw", "texts")

    def __init__(
        self, raw: bytes, charset: str, ends: list[int], decoded: list[bytes], texts: list[str]
    ):
        self.raw, self.charset, self.ends = raw, charset, ends
        self.decoded, self.texts = decoded, texts


def decode(raw: bytes, charset: str, earlier: Pieces | None) -> tuple[bytes, str, Pieces] | None:
    """``a2b_qp(raw)``, its text in ``charset`` (one of CODECS) with surrogateescape, and
    the pieces for the next part, taking ``earlier``'s pieces where ``raw`` holds them.
    None when the part cannot be cut so (then it is decoded whole by the caller)."""
    if earlier is not None and earlier.charset != charset:
        earlier = None  # its texts read the same bytes otherwise (fuzz finding)
    ends: list[int] = []
    decoded: list[bytes] = []
    texts: list[str] = []
    pos = 0
    k = 0  # the earlier piece expected next
    old = memoryview(earlier.raw) if earlier is not None else None
    count = len(earlier.ends) if earlier is not None else 0
    while pos < len(raw):
        if earlier is not None and k < count:
            assert old is not None
            start, end = earlier.ends[k - 1] if k else 0, earlier.ends[k]
            piece = old[start:end]
            # The earlier part's last piece may end in the middle of a line (or of a
            # character): only at the new part's end is it the same there.
            whole = end < len(earlier.raw) or pos + len(piece) == len(raw)
            if whole and raw.startswith(piece, pos):  # the same bytes: the same decoding
                pos += len(piece)
                ends.append(pos)
                decoded.append(earlier.decoded[k])
                texts.append(earlier.texts[k])
                k += 1
                continue
            found = _resync(raw, pos, earlier, old, k)
            if found is not None:  # what lies before it is new: decoded as one piece
                k, at = found
                if not _fresh(raw, pos, at, charset, ends, decoded, texts):
                    return None
                pos = at
                continue
            k = count  # nothing more to take over
        end = _cut(raw, pos)
        if not _fresh(raw, pos, end, charset, ends, decoded, texts):
            return None
        pos = end
    return b"".join(decoded), "".join(texts), Pieces(raw, charset, ends, decoded, texts)


def _resync(
    raw: bytes, pos: int, earlier: Pieces, old: memoryview, k: int
) -> tuple[int, int] | None:
    """(earlier piece, its place in ``raw`` past ``pos`` at a line start) after piece ``k``
    changed: the next few earlier pieces are looked for a little ahead."""
    base = earlier.ends[k - 1] if k else 0
    for later in range(k + 1, min(k + 1 + _LOOK_AHEAD, len(earlier.ends))):
        start, end = earlier.ends[later - 1], earlier.ends[later]
        limit = pos + (start - base) + _WINDOW + (end - start)
        at = raw.find(old[start:end], pos, limit)
        if at > pos and raw[at - 1] == 0x0A:
            return later, at
    return None


def _cut(raw: bytes, pos: int) -> int:
    """Where a new piece from ``pos`` ends: after the first line break at least PIECE bytes
    on that is not a soft one ("=" before it), or the part's end."""
    at = pos + PIECE - 1
    while True:
        at = raw.find(b"\n", at)
        if at < 0:
            return len(raw)
        before = at - 1 if at > 0 and raw[at - 1] == 0x0D else at
        if before == 0 or raw[before - 1] != 0x3D:  # "="
            return at + 1
        at += 1


def _fresh(
    raw: bytes,
    start: int,
    end: int,
    charset: str,
    ends: list[int],
    decoded: list[bytes],
    texts: list[str],
) -> bool:
    """Decode ``raw[start:end]`` as a new piece; False if it may not end a piece (its
    decoded bytes do not end with a line break: a character could span it)."""
    data = binascii.a2b_qp(raw[start:end])
    if end < len(raw) and not data.endswith(b"\n"):
        return False
    ends.append(end)
    decoded.append(data)
    texts.append(data.decode(charset, "surrogateescape"))
    return True
