"""Quoted-printable: encode a whole part, or change only the encoded lines an edit touches.

The splice rests on one property of the decoding (``binascii.a2b_qp``, as the rest of the
rewrite reads a part): its state starts afresh after every line break. A soft break ("=" and
the line break) ends at its LF and an "=XX" escape never spans one, so each encoded line
decodes on its own and the part decodes to its lines' decodings, one after the other. The
sender's lines whose decoded bytes no edit touches are therefore kept byte for byte, and only
the lines an edit touches are encoded anew, in the part's own line ending, at most 76
characters a line. Lines that are no fit for the wire (a bare CR, more than 998 octets) are
encoded anew too once the part changes, as the whole part used to be.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._native import load
from .edits import ByteEdit

Span = tuple[int, int] | ByteEdit  # where an edit lies; only its first two items are read

LINE_LIMIT = 998  # octets before the line break (RFC 5322 2.1.1)
_COPIED = 4096  # Splice keeps decoded bytes up to this long as copies
_MAX_ENCODED = 76  # characters per encoded line (RFC 2045 6.7)
_BARE_CR = re.compile(rb"\r(?!\n)")

# Splice made ready and filled in C (_native/qpsplice.c) for the regions of its common case;
# the Python below stays the reference it is tested against (SMTPAPI_PURE_PYTHON=1 forces it).
_qpsplice: Any = load("qpsplice")
# Long lines found by memrchr, window by window (_native/textrun.c); _long_lines_reference is
# the reference it is tested against.
_textrun: Any = load("textrun")


def encode(data: bytes, eol: bytes) -> bytes:
    """The whole of ``data`` in quoted-printable; every line break in it becomes ``eol``."""
    # b2a_qp picks CRLF or LF from the first line break it sees; give it LF only, then
    # write the part's own line ending.
    text = data.replace(b"\r\n", b"\n")
    if b"\r" in text:
        # A CR that ends no line is data, written =0D (RFC 2045). b2a_qp's text mode would
        # pass it through raw (a bare CR on the wire) or, right before a LF, take it for
        # CRLF and write CRCRLF below; its binary mode, line by line, encodes it.
        encoded = b"\n".join(binascii.b2a_qp(line, istext=False) for line in text.split(b"\n"))
    else:
        encoded = binascii.b2a_qp(text, istext=True)
    return encoded.replace(b"\n", eol) if eol != b"\n" else encoded


def splice(
    raw: bytes, decoded: bytes, edits: list[ByteEdit], eol: bytes, bare_cr: bool = True
) -> bytes:
    """``raw`` (a part body, ``decoded`` its decoding) with ``edits`` of the decoded bytes
    applied: the lines they touch encoded anew, every other line as it was. ``bare_cr``
    False: the caller knows ``raw`` has no bare CR, and it is not looked for again."""
    return splice_regions(raw, decoded, regions(raw, edits, bare_cr), edits, eol)


def regions(raw: bytes, spans: Sequence[Span], bare_cr: bool = True) -> list[Region]:
    """The runs of encoded lines that edits at ``spans`` (decoded offsets, sorted, apart)
    touch, with the lines unfit for the wire: where they are depends on the offsets alone,
    so copies that differ only in what they put there share them (see ``splice_regions``)."""
    walk = _Walk(raw, _unfit_lines(raw, bare_cr))
    for span in spans:
        walk.add(span[0], span[1])
    walk.unfit_before(len(raw) + 1)
    return walk.regions


def splice_regions(
    raw: bytes, decoded: bytes, found: list[Region], edits: list[ByteEdit], eol: bytes
) -> bytes:
    """``splice`` with the regions of ``edits``' offsets already found by ``regions``."""
    pieces = []
    pos = taken = 0
    for region in found:
        pieces.append(raw[pos : region.start])
        mine = edits[taken : taken + region.edit_count]
        pieces.append(_encode_region(raw, decoded, region, mine, eol))
        taken += region.edit_count
        pos = region.end
    pieces.append(raw[pos:])
    return b"".join(pieces)


class Splice:
    """``splice_regions`` made ready for edits at fixed places (a plan's spans), so that each
    copy of a body only puts its own replacements in (``fill``): the part's bytes between
    the regions and the decoded bytes around each edit are found once (by offsets in C,
    _native/qpsplice.c; as pieces for the Python way, its reference)."""

    __slots__ = ("_made", "_native", "_pieces", "eol")

    def __init__(
        self,
        raw: bytes,
        decoded: bytes,
        found: list[Region],
        spans: Sequence[Span],
        eol: bytes,
    ):
        self.eol = eol
        self._pieces: tuple[list, memoryview] | None = None
        self._made = (raw, decoded, found, spans)
        # The C splice keeps offsets only; the pieces below are cut when the Python way is
        # needed (no native module, or a copy whose replacements hold a LF).
        self._native = None
        if _qpsplice is not None and type(raw) is bytes and type(decoded) is bytes:
            self._native = _qpsplice.prepare(raw, decoded, found, list(spans), eol)

    @property
    def regions(self) -> list[tuple[memoryview, list[bytes | memoryview], bool]]:
        """Per region: the raw bytes before it, the decoded bytes around its edits, and
        whether its last line had a line break."""
        return self._cut()[0]

    @property
    def tail(self) -> memoryview:
        """The raw bytes after the last region."""
        return self._cut()[1]

    def _cut(self) -> tuple[list, memoryview]:
        if self._pieces is None:
            self._pieces = _cut_pieces(*self._made)
        return self._pieces

    def fill(self, replacements: Sequence[bytes]) -> bytes:
        """The part with ``replacements`` (one per span, in order) spliced in."""
        if self._native is not None:
            spliced = self._native.fill(replacements)
            if spliced is not None:
                return spliced
        return self.fill_reference(replacements)

    def fill_reference(self, replacements: Sequence[bytes]) -> bytes:
        """``fill`` in Python: the reference, and the way for regions C leaves (a LF in one)."""
        pieces: list[bytes | memoryview] = []
        taken = 0
        eol = self.eol
        regions, tail = self._cut()
        for before, around, broken in regions:
            pieces.append(before)
            if len(around) == 2:
                data = b"".join((around[0], replacements[taken], around[1]))
                taken += 1
            else:
                mixed: list[bytes | memoryview] = [around[0]]
                for after in around[1:]:
                    mixed += (replacements[taken], after)
                    taken += 1
                data = b"".join(mixed)
            pieces.append(_encode_data(data, eol, broken))
        pieces.append(tail)
        return b"".join(pieces)


def _cut_pieces(
    raw: bytes, decoded: bytes, found: list[Region], spans: Sequence[Span]
) -> tuple[list[tuple[memoryview, list[bytes | memoryview], bool]], memoryview]:
    """Splice's pieces: held as memoryviews of the part's own bytes, they cost no copy of it."""
    raw_view = memoryview(raw)

    def piece(start: int, end: int) -> bytes | memoryview:
        # Short ones copied (joining bytes is faster); a long one (a region of nothing
        # but lines unfit for the wire) viewed, so a huge part is not held twice.
        return decoded[start:end] if end - start <= _COPIED else memoryview(decoded)[start:end]

    regions: list[tuple[memoryview, list[bytes | memoryview], bool]] = []
    pos = taken = 0
    for region in found:
        around, at = [], region.dstart
        for span in spans[taken : taken + region.edit_count]:
            around.append(piece(at, span[0]))
            at = span[1]
        around.append(piece(at, region.dend))
        broken = region.end > region.start and raw[region.end - 1] == 10
        regions.append((raw_view[pos : region.start], around, broken))
        taken += region.edit_count
        pos = region.end
    return regions, raw_view[pos:]


@dataclass(slots=True)
class Region:
    """Whole encoded lines ``raw[start:end]``, decoding to ``decoded[dstart:dend]``, that
    ``edit_count`` edits (the next ones in order) change."""

    start: int
    end: int
    dstart: int
    dend: int
    edit_count: int = 0


class _Walk:
    """Goes through the lines once, front to back, collecting regions in order."""

    def __init__(self, raw: bytes, unfit: list[tuple[int, int]]):
        self.raw = raw
        self.regions: list[Region] = []
        self.x = self.dx = 0  # where the lines not yet taken start, raw and decoded
        self._unfit = iter(unfit)
        self._next_unfit = next(self._unfit, None)

    def add(self, start: int, end: int) -> None:
        last = self.regions[-1] if self.regions else None
        if last is None or not (start < last.dend or _open_ended(self.raw, last)):
            last = _line_at(self.raw, self.x, self.dx, start)
            self.unfit_before(last.start)
            self.regions.append(last)
        last.edit_count += 1
        self._take(last, end)

    def unfit_before(self, pos: int) -> None:
        """Regions for the unfit lines that start before raw offset ``pos``."""
        while self._next_unfit is not None and self._next_unfit[0] < pos:
            start, end = self._next_unfit
            last = self.regions[-1] if self.regions else None
            if last is not None and start == last.end and not _open_ended(self.raw, last):
                # Right after the last region: one region for the run, not an object and an
                # encoding per line (a part of nothing but bare-CR lines).
                last.end, last.dend = end, last.dend + _decoded_len(self.raw, start, end)
                self.x, self.dx = last.end, last.dend
            elif start >= self.x:  # not inside a region already
                dstart = self.dx + _decoded_len(self.raw, self.x, start)
                region = Region(start, end, dstart, dstart + _decoded_len(self.raw, start, end))
                self.regions.append(region)
                self.x, self.dx = region.end, region.dend
            self._next_unfit = next(self._unfit, None)

    def _take(self, region: Region, dend: int) -> None:
        """Take whole lines into ``region`` until its decoding reaches ``dend``."""
        raw = self.raw
        while region.dend < dend and region.end < len(raw):
            nl = raw.find(b"\n", region.end)
            end = len(raw) if nl < 0 else nl + 1
            region.dend += _decoded_len(raw, region.end, end)
            region.end = end
        self.x, self.dx = region.end, region.dend


def _open_ended(raw: bytes, region: Region) -> bool:
    """Whether the region reaches the end of the part with no line break to end it (it holds
    a last line that has none, or no line at all): anything after it joins its last line."""
    return region.end == len(raw) and (region.end == region.start or raw[-1] != 10)


def _decoded_len(raw: bytes, start: int, end: int) -> int:
    return len(binascii.a2b_qp(raw[start:end]))


def _line_at(raw: bytes, x: int, dx: int, target: int) -> Region:
    """The last line, from the one at raw ``x`` (decoded ``dx``) on, whose decoding starts
    at or before decoded offset ``target``, as a region of its own (empty past the end)."""
    while True:
        # A line never decodes to more bytes than it has, so decoded offset ``target`` lies
        # at raw offset x + (target - dx) or past it: a line starting before that starts at
        # or before ``target`` in decoded bytes too. Jump to the last such line at once.
        nl = raw.rfind(b"\n", x, x + (target - dx))
        if nl < 0:
            nl = raw.find(b"\n", x)
            end = len(raw) if nl < 0 else nl + 1
            size = _decoded_len(raw, x, end)
            if dx + size > target or nl < 0:
                return Region(x, end, dx, dx + size)
        else:
            end = nl + 1
            size = _decoded_len(raw, x, end)
        x, dx = end, dx + size


def _encode_region(
    raw: bytes, decoded: bytes, region: Region, edits: list[ByteEdit], eol: bytes
) -> bytes:
    pieces = []
    pos = region.dstart
    for start, end, new in edits:
        pieces += (decoded[pos:start], new)
        pos = end
    pieces.append(decoded[pos : region.dend])
    broken = region.end > region.start and raw[region.end - 1] == 10
    return _encode_data(b"".join(pieces), eol, broken)


def _encode_data(data: bytes, eol: bytes, broken: bool) -> bytes:
    """A region's new decoded bytes ``data`` encoded; ``broken``: its last line had a line
    break (so what follows it starts a line of its own)."""
    nl = data.find(b"\n")
    if nl < 0 and (eol == b"\r\n" or eol == b"\n"):
        # Most regions: a link in lines joined by soft breaks (or the part's end). What the
        # general way below writes for them, without its splitting and joining.
        encoded = binascii.b2a_qp(data, istext=False)
        encoded = encoded.replace(b"\n", eol) if eol != b"\n" else encoded
        return _soft_ended(encoded, eol) if broken and not encoded.endswith(b"\n") else encoded
    if data.endswith(eol) and nl == len(data) - 1:
        # One line and its break (it needs no soft break), no LF in the line itself.
        encoded = binascii.b2a_qp(data[: -len(eol)], istext=False)
        return (encoded if eol == b"\n" else encoded.replace(b"\n", eol)) + eol
    # Line breaks in the decoded bytes are written as the part's own; anything else there,
    # a lone CR or LF included, is data and written as =XX, so the decoding stays the same.
    lines = map(_encode_line, data.split(eol))
    encoded = eol.join(lines if eol == b"\n" else (line.replace(b"\n", eol) for line in lines))
    if broken and not encoded.endswith(b"\n"):
        # The region's last line had a line break, and what follows starts a new line.
        encoded = _soft_ended(encoded, eol)
    return encoded


def _encode_line(line: bytes) -> bytes:
    """One line's decoded bytes, CR and LF in them data; soft breaks are LF (b"=\\n")."""
    if b"\n" not in line:
        return binascii.b2a_qp(line, istext=False)
    # b2a_qp lets a line reach 77 characters when a plain character precedes an LF it then
    # encodes (it expects the LF to end the line): give it none, each =0A a line of its own.
    pieces = [binascii.b2a_qp(piece, istext=False) for piece in line.split(b"\n")]
    return b"".join(_soft_ended(piece, b"\n") + b"=0A=\n" for piece in pieces[:-1]) + pieces[-1]


def _soft_ended(encoded: bytes, eol: bytes) -> bytes:
    """``encoded`` ended by a soft line break, its last line kept within 76 characters."""
    if not encoded:
        return encoded  # nothing left of the line: the next one follows at once
    last = encoded.rfind(b"\n") + 1
    if len(encoded) - last < _MAX_ENCODED:
        return encoded + b"=" + eol
    # The last line is full: its last character (or =XX escape) goes to a line of its own.
    cut = len(encoded) - (3 if encoded[-3] == ord("=") else 1)
    return encoded[:cut] + b"=" + eol + encoded[cut:] + b"=" + eol


def _unfit_lines(raw: bytes, bare_cr: bool) -> list[tuple[int, int]]:
    """(start, end) of each line that must not go out as it is: a bare CR, or over 998
    octets. A part that changes has neither (RFC 5322 2.3), whatever the sender wrote."""
    found = set()
    if bare_cr and _BARE_CR.search(raw):
        found.update(_line_around(raw, m.start()) for m in _BARE_CR.finditer(raw))
    found.update(_long_lines(raw))
    return sorted(found)


def _line_around(raw: bytes, pos: int) -> tuple[int, int]:
    nl = raw.find(b"\n", pos)
    return raw.rfind(b"\n", 0, pos) + 1, len(raw) if nl < 0 else nl + 1


def _long_lines(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line over LINE_LIMIT octets (CR LF or LF not counted)."""
    if _textrun is not None:
        return _textrun.long_lines(raw, LINE_LIMIT)
    return _long_lines_reference(raw)


def _long_lines_reference(raw: bytes) -> list[tuple[int, int]]:
    """:func:`_long_lines` found window by window: the reference the C scan is tested against."""
    found = []
    pos = 0
    while len(raw) - pos > LINE_LIMIT:
        # Every line ending in the next LINE_LIMIT + 2 bytes is short enough, except one
        # that fills them all without a CR before its LF.
        window = pos + LINE_LIMIT + 2
        nl = raw.rfind(b"\n", pos, window)
        if nl < 0 or (nl == window - 1 and raw[nl - 1] != 13 and raw.find(b"\n", pos, nl) < 0):
            found.append(_line_around(raw, pos))
            nl = found[-1][1] - 1
        pos = nl + 1
    return found
