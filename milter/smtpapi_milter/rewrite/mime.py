"""Find the parts to track in a raw MIME body, by byte offsets (SPEC 4).

Python's :mod:`email` package re-serializes whatever it parses, and a re-serialized message is
not the sender's message (boundaries, folding, header case and line endings change). So we
only *locate* parts here: every part is a byte range of the original body, the two parts we
track are decoded, changed and re-encoded, and everything else is copied byte for byte.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.message
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._native import load
from ..memo import remember_short
from . import qp
from .search import find

MAX_DEPTH = 32
MALFORMED_HEADER = "a header block has a malformed line"
TOO_DEEP = f"multiparts nested deeper than {MAX_DEPTH} levels"
MAX_BOUNDARY = 200  # RFC 2046 allows 70
LONG_BOUNDARY = f"a multipart boundary is longer than {MAX_BOUNDARY} characters"
UNREADABLE_PARAMETERS = "a Content-Type or Content-Disposition has parameters no reader agrees on"
SIGNED = "message is signed or encrypted"
INLINE_PGP = "message carries inline PGP"
QP_LINE_LIMIT = 998
BASE64_LINE = 76  # characters per base64 line at most (RFC 2045 6.8)
# What str.strip() removes from ASCII text. Not the 8-bit NBSP or NEL a header's latin-1
# reading may hold: other readers keep those (the email package shows them as U+FFFD), so
# "\xa08bit" is an unknown encoding to them and must be one to us.
ASCII_SPACE = "".join(c for c in map(chr, range(128)) if c.isspace())

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_FIELD = re.compile(rb"([^\s:]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)(?:\r?\n|$)")
# What may follow "--boundary" on a delimiter line (RFC 2046 5.1.1: "--" closes, then LWSP).
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|$)", re.M)
# RFC 5322 field name and colon, nothing between: what every parser reads as a header field.
_STRICT_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_BARE_CR = re.compile(rb"\r(?!\n)")
# has_bare_cr by memchr in C (_native/textrun.c); SMTPAPI_PURE_PYTHON=1 forces the regex.
_textrun: Any = load("textrun")
_PGP = re.compile(rb"^-----BEGIN PGP (?:SIGNED )?MESSAGE-----", re.M)

SIGNED_OR_ENCRYPTED = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-encrypted",
        "application/pgp-signature",
    }
)
IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
KNOWN_ENCODINGS = IDENTITY_ENCODINGS | {"quoted-printable", "base64"}


@dataclass(slots=True)
class MimePart:
    """One part of the message as a byte range of the body buffer.

    ``start`` is where the part's own header block begins (equal to ``body_start`` for the
    top level, whose headers the MTA hands over separately), ``end`` is just past its body.
    ``cte_range`` is the byte range of its Content-Transfer-Encoding field, if any.
    ``problem`` says why readers may disagree about this part, so that changing the message
    could change text other than what we meant to: a header line that is no well-formed field
    (the email package starts the body there), a message header field with an odd name or a
    bare CR, or multiparts nested past ``MAX_DEPTH`` or with a boundary over ``MAX_BOUNDARY``
    characters (we stop looking; others may not).
    """

    start: int
    body_start: int
    end: int
    content_type: str
    params: dict[str, str]
    cte: str
    disposition: str
    has_filename: bool
    cte_range: tuple[int, int] | None = None
    problem: str | None = None
    headers_only: bool = False  # no blank line after the header: the part has no body at all
    children: list[MimePart] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        return self.start == 0 and self.body_start == 0

    @property
    def charset(self) -> str:
        return self.params.get("charset", "us-ascii").strip() or "us-ascii"

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or self.has_filename

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _parse_params(value: str) -> tuple[str, dict[str, str], str | None]:
    """Content-Type / Content-Disposition value → (lower-case main value, params, problem):
    ``problem`` (UNREADABLE_PARAMETERS) when the parameters cannot be read at all."""
    main, params, problem = _parsed_params(value)
    return main, dict(params), problem  # a part's own dict: nothing shared between parts


# A campaign's parts carry the same few Content-Type values in every message, and the email
# package's parameter parser is slow: each value is parsed once (short values only).
@remember_short(1024)
def _parsed_params(value: str) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    try:
        main, params = _parse_params_uncached(value)
    except (TypeError, ValueError, IndexError, LookupError):
        # The email package fails on some hostile values ('filename*0=a; filename*=b':
        # decode_params sorts RFC 2231 continuation numbers with None, a TypeError): the
        # message failed with a traceback, tempfailed for good in the milter (fuzz finding).
        # Readers cannot agree on such a part either: the message is left as it is.
        return value.split(";", 1)[0].strip(ASCII_SPACE).lower(), (), UNREADABLE_PARAMETERS
    return main, tuple(params.items()), None


def _parse_params_uncached(value: str) -> tuple[str, dict[str, str]]:
    if not value.isascii():
        # The email package strips each parameter with str.strip(), which takes our latin-1
        # reading's NEL and NBSP for spaces; other readers do not (the email package, given
        # the bytes, sees U+FFFD): 'boundary="b"\x85' has no boundary "b" to them (fuzz
        # finding: we split such a multipart, its readers saw one part). Read as they do.
        value = value.encode("latin-1").decode("ascii", "surrogateescape")
    holder = email.message.Message()
    holder["X"] = value
    params = holder.get_params(header="X") or []
    if not params:
        return "", {}
    main = params[0][0].strip().lower()
    out = {}
    # "Content-Type: charset=x" has no type, and its first item is a parameter to readers
    # (email.message.get_param finds it): so it is to us.
    for key, val in params if params[0][1] else params[1:]:
        if isinstance(val, tuple):  # RFC 2231
            try:
                val = email.utils.collapse_rfc2231_value(val)
            except ValueError:  # a NUL in its charset name fails the codec lookup
                val = val[2]
        # A repeated parameter: the first counts, as in the email package.
        out.setdefault(key.strip().lower(), email.utils.unquote(str(val)))
    return main, out


def _describe(
    fields: dict[str, str], default_type: str
) -> tuple[str, dict[str, str], str, str, bool, str | None]:
    value = fields.get("content-type", "")
    _, params, problem = _parse_params(value)
    # The type is what comes before the first ';', as the email package (our oracle's
    # reader) and most clients take it; anything but one type/subtype means the default.
    # (A value like "=/" is a type to them, not a parameter and a default text/plain.)
    ctype = value.split(";", 1)[0].strip(ASCII_SPACE).lower()
    if ctype.count("/") != 1:
        ctype = default_type
    cte = normalise_cte(fields.get("content-transfer-encoding", ""))
    disposition, dparams, disposition_problem = _parse_params(fields.get("content-disposition", ""))
    has_filename = "filename" in dparams or "name" in params
    return ctype, params, cte, disposition, has_filename, problem or disposition_problem


def normalise_cte(value: str) -> str:
    """The transfer encoding, forgiving the spellings real mailers produce ("7-bit", "8bit;",
    quoted values). Anything still unknown is left unknown: RFC 2045 6.4 says such a part
    is opaque, and we leave it byte-identical."""
    cte = value.split(";", 1)[0].strip(ASCII_SPACE).strip("\"'").strip(ASCII_SPACE).lower()
    return _CTE_ALIASES.get(cte, cte)


# Misspellings of the identity encodings, seen in real mail: decoding them is a no-op, so
# accepting them cannot mangle anything.
_CTE_ALIASES = {"7-bit": "7bit", "8-bit": "8bit", "7bits": "7bit", "8bits": "8bit"}


def parse_structure(headers: list[tuple[str, bytes]], body: bytes) -> MimePart:
    """The MIME tree of a message whose headers the MTA gave us apart from the body."""
    return parse_body(structure_fields(headers), body)


def structure_fields(headers: list[tuple[str, bytes]]) -> tuple[str, str, str, bool]:
    """All the MIME tree takes from the message header: Content-Type,
    Content-Transfer-Encoding, Content-Disposition (the first of each) and whether any
    field is malformed. Two messages equal in these and in body have the same tree."""
    fields: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in ("content-type", "content-transfer-encoding", "content-disposition"):
            fields.setdefault(key, _text(value))
    malformed = any(_malformed_field(name, value) for name, value in headers)
    return (
        fields.get("content-type", ""),
        fields.get("content-transfer-encoding", ""),
        fields.get("content-disposition", ""),
        malformed,
    )


def parse_body(fields: tuple[str, str, str, bool], body: bytes) -> MimePart:
    """The MIME tree of ``body`` under the message header's ``structure_fields``."""
    content_type, cte, disposition, malformed = fields
    # A field the header lacks reads as an empty one (see _describe).
    present = {
        "content-type": content_type,
        "content-transfer-encoding": cte,
        "content-disposition": disposition,
    }
    ctype, params, cte, disposition, has_filename, problem = _describe(present, "text/plain")
    root = MimePart(0, 0, len(body), ctype, params, cte, disposition, has_filename)
    if malformed:
        root.problem = MALFORMED_HEADER
    elif problem:
        root.problem = problem
    if ctype.startswith("multipart/"):
        _fill_children(body, root, 1)
    return root


def _malformed_field(name: str, value: bytes) -> bool:
    """A message header field that readers split differently: an odd name or a bare CR
    (the email package ends a line there, an MTA does not)."""
    if name.isascii():
        # _STRICT_FIELD's test (printable, no space or colon) by str methods: every field of
        # every message comes here, and encoding each name for the pattern cost ~0.5 us.
        if not name.isprintable() or " " in name or ":" in name or not name:
            return True
    elif not _STRICT_FIELD.fullmatch(name.encode("utf-8", "surrogateescape") + b":"):
        return True
    return b"\r" in value and _BARE_CR.search(value) is not None


def _text(value: bytes) -> str:
    return re.sub(rb"\r?\n[ \t]", b" ", value).decode("latin-1").strip(ASCII_SPACE)


def _parse_part(buf: bytes, start: int, end: int, default_type: str, depth: int) -> MimePart:
    fields: dict[str, str] = {}
    cte_range = None
    problem = None
    headers_only = False
    if buf.startswith(b"\n", start, end) or buf.startswith(b"\r\n", start, end):
        body_start = start + (1 if buf[start] == 10 else 2)
    else:
        blank = _BLANK_LINE.search(buf, start, end)
        header_end = blank.start() if blank else end
        body_start = blank.end() if blank else end
        headers_only = blank is None
        pos = start
        while pos < header_end:
            m = _HEADER_FIELD.match(buf, pos, header_end)
            if not _STRICT_FIELD.match(buf, pos, header_end):
                problem = MALFORMED_HEADER
            if not m:  # not a header line: skip it, as MUAs do
                nl = buf.find(b"\n", pos, header_end)
                pos = header_end if nl < 0 else nl + 1
                continue
            key = m.group(1).decode("latin-1").lower()
            if key not in fields:
                fields[key] = _text(m.group(2))
                if key == "content-transfer-encoding":
                    # Include the line break that ends the field (it precedes the blank line).
                    field_end = m.end() if m.end() < header_end else _eol_end(buf, m.end())
                    cte_range = (m.start(), field_end)
            pos = max(m.end(), pos + 1)
    ctype, params, cte, disposition, has_filename, unreadable = _describe(fields, default_type)
    part = MimePart(
        start,
        body_start,
        end,
        ctype,
        params,
        cte,
        disposition,
        has_filename,
        cte_range,
        problem or unreadable,
    )
    part.headers_only = headers_only
    if ctype.startswith("multipart/"):
        if depth < MAX_DEPTH:
            _fill_children(buf, part, depth + 1)
        else:
            part.problem = TOO_DEEP
    return part


def _eol_end(buf: bytes, pos: int) -> int:
    if buf.startswith(b"\r\n", pos):
        return pos + 2
    if buf.startswith(b"\n", pos):
        return pos + 1
    return pos


def _fill_children(buf: bytes, part: MimePart, depth: int) -> None:
    boundary = part.params.get("boundary", "")
    if len(boundary) > MAX_BOUNDARY:
        part.problem = LONG_BOUNDARY  # others still split it: we would not know the top parts
        return
    if not boundary:
        return
    default_type = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
    previous_end = None
    for start, end, closing in _delimiters(buf, boundary.encode("latin-1", "replace"), part):
        if previous_end is not None:
            child_end = _before_eol(buf, start, previous_end)
            part.children.append(_parse_part(buf, previous_end, child_end, default_type, depth))
        if closing:  # close delimiter: the rest is epilogue
            return
        previous_end = end
    if previous_end is not None and previous_end < part.end:  # truncated: no close delimiter
        child = _parse_part(buf, previous_end, part.end, default_type, depth)
        if not child.children:
            # As the email package reads it: the last line break is the missing delimiter's.
            child.end = _before_eol(buf, child.end, child.body_start)
        part.children.append(child)


def _delimiters(buf: bytes, boundary: bytes, part: MimePart) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is-close) of each delimiter line "--boundary[--]" in the part's body.

    The search (search.find) jumps from candidate to candidate in C; a ``^--boundary`` regex
    in MULTILINE mode would try every byte of the body (most of a large message's parse time).
    """
    marker = b"--" + boundary
    pos = find(buf, marker, part.body_start, part.end)
    while pos >= 0:
        m = None
        if pos == 0 or buf[pos - 1] == 10:  # a delimiter begins a line
            m = _DELIMITER_TAIL.match(buf, pos + len(marker), part.end)
        if m is not None:
            yield pos, m.end(), bool(m.group(1))
        pos = find(buf, marker, m.end() if m is not None else pos + 1, part.end)


def _before_eol(buf: bytes, pos: int, floor: int) -> int:
    """The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1)."""
    if pos - 2 >= floor and buf[pos - 2 : pos] == b"\r\n":
        return pos - 2
    if pos - 1 >= floor and buf[pos - 1] == 10:
        return pos - 1
    return pos


def top_parts(root: MimePart) -> tuple[MimePart | None, MimePart | None]:
    """The top text/html and top text/plain parts, as Momentum chooses them.

    The first of each type in document order that is not an attachment; attached messages
    (message/rfc822) are never entered because their parts belong to someone else's mail.
    """
    html = text = None
    stack = [root]
    while stack:
        part = stack.pop()
        if part.children:
            stack.extend(reversed(part.children))
            continue
        if part.is_attachment:
            continue
        if part.content_type == "text/html" and html is None:
            html = part
        elif part.content_type == "text/plain" and text is None:
            text = part
    return html, text


def has_bare_cr(data: bytes) -> bool:
    """Whether ``data`` holds a CR that no LF follows."""
    if _textrun is not None:
        return _textrun.first_bare_cr(data) >= 0
    return has_bare_cr_reference(data)


def has_bare_cr_reference(data: bytes) -> bool:
    """``has_bare_cr`` by the regex: the reference _native/textrun.c is tested against."""
    return b"\r" in data and _BARE_CR.search(data) is not None


def untouchable_reason(root: MimePart, body: bytes, bare_cr: bool | None = None) -> str | None:
    """Why this message must be delivered as it is (signed, encrypted, ambiguous), or None.

    ``bare_cr``: what ``has_bare_cr(body)`` says, when the caller knows already."""
    for part in root.walk():
        if part.content_type in SIGNED_OR_ENCRYPTED:
            return f"{SIGNED} ({part.content_type})"
        if part.problem:
            # Which part is the top text/html one, and where its body starts, depends on the
            # reader: a change could land where some recipients' clients see other text.
            return part.problem
    if bare_cr is not False and _bare_cr_changes_structure(root, body):
        return "the MIME structure depends on whether a bare CR ends a line"
    for part in top_parts(root):
        if part is None or find(body, b"-----BEGIN PGP ", part.body_start, part.end) < 0:
            continue  # the plain search is fast; the regex below checks it begins a line
        if _PGP.search(body, part.body_start, part.end):
            return INLINE_PGP
    return None


def _bare_cr_changes_structure(root: MimePart, body: bytes) -> bool:
    """Whether reading bare CRs as line breaks (as the email package does) finds other parts.

    A CR without LF is no line break on the wire, yet some readers split lines there; where
    that moves a delimiter or a header, the two readings disagree about what to change.
    """
    if not root.children or not has_bare_cr(body):
        return False
    relaxed = dataclasses.replace(root, children=[])
    _fill_children(_BARE_CR.sub(b"\n", body), relaxed, 1)  # same length: offsets compare
    return _shape(relaxed) != _shape(root)


def _shape(part: MimePart) -> tuple:
    own = (part.start, part.body_start, part.end, part.content_type, part.cte, part.problem)
    return (own, part.is_attachment, part.charset, [_shape(c) for c in part.children])


def line_ending(body: bytes, start: int = 0, end: int | None = None) -> bytes:
    """The line ending a part uses: CRLF on the wire, LF in some files on disk."""
    nl = body.find(b"\n", start, len(body) if end is None else end)
    if nl < 0:
        nl = body.find(b"\n")
    if nl < 0:
        return b"\r\n"
    # A LF that starts the buffer has no CR before it (an LF-only file's empty first line).
    return b"\n" if nl == 0 or body[nl - 1] != 13 else b"\r\n"


def decode_transfer(raw: bytes, cte: str) -> bytes | None:
    """A part's body without its transfer encoding; None when the encoding is unknown or
    the body is not what it claims (base64 that is not only base64)."""
    if cte in IDENTITY_ENCODINGS:
        return raw
    try:
        if cte == "quoted-printable":
            return binascii.a2b_qp(raw)
        if cte == "base64":
            # A forgiving decoder stops at the first padding: a footer a list server
            # appended after the base64, or two encoded chunks run together, would vanish
            # when the part is encoded again (fuzz finding). Such a part is left exactly
            # as it came. Stray characters outside the alphabet are skipped, as readers do.
            padding = raw.find(b"=")
            if padding >= 0 and _BASE64_DATA.search(raw, padding):
                return None
            return binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        return None
    return None


# Base64 data: after the padding, one of these is text a decoder would drop.
_BASE64_DATA = re.compile(rb"[A-Za-z0-9+/]")


def encode_transfer(
    data: bytes, cte: str, eol: bytes, base64_line: int = BASE64_LINE
) -> tuple[bytes, str]:
    """Re-encode a changed part in its own transfer encoding → (bytes, encoding used).

    A 7bit/8bit part whose lines would pass 998 octets moves to quoted-printable (RFC 5322
    line limit); a part that had bare CRs gets them fixed, since a bare CR breaks signers.
    Base64 lines are ``base64_line`` characters long (see ``base64_line_length``).
    """
    if cte == "quoted-printable":
        return qp.encode(data, eol), cte
    if cte == "base64":
        encoded = binascii.b2a_base64(data, newline=False)
        lines = [encoded[i : i + base64_line] for i in range(0, len(encoded), base64_line)]
        return eol.join(lines) + (eol if lines else b""), cte
    if cte == "binary":
        return data, cte
    if b"\r" in data and _BARE_CR.search(data):
        data = _BARE_CR.sub(eol, data)
    # splitlines runs in C; a regex for "999 non-break bytes" costs O(bytes x line length).
    if max(map(len, data.splitlines()), default=0) > QP_LINE_LIMIT:
        return qp.encode(data, eol), "quoted-printable"
    return data, cte


def base64_line_length(raw: bytes) -> int:
    """The length of the sender's base64 lines, if they have one that makes sense: the first
    line's, when another follows and it is a multiple of 4 up to 76 (RFC 2045 6.8); else 76."""
    nl = raw.find(b"\n")
    if nl < 0 or not raw[nl + 1 : nl + 3].strip():  # one line: its length is no choice
        return BASE64_LINE
    first = nl - 1 if nl > 0 and raw[nl - 1] == 13 else nl
    return first if first % 4 == 0 and 4 <= first <= BASE64_LINE else BASE64_LINE


@dataclass(frozen=True)
class PartChange:
    """A new body (already transfer-encoded) for one part, and its new encoding."""

    part: MimePart
    body: bytes
    cte: str


def apply_changes(body: bytes, changes: list[PartChange]) -> tuple[bytes, str | None]:
    """Splice changed parts into the body → (new body, new top-level CTE or None).

    A part whose encoding changed gets its own Content-Transfer-Encoding field rewritten in
    place; for the top level, the caller changes the message header instead.
    """
    pieces = []
    pos = 0
    root_cte = None
    for change in sorted(changes, key=lambda c: c.part.body_start):
        part = change.part
        if change.cte != part.cte:
            if part.is_root:
                root_cte = change.cte
            else:
                pieces.append(body[pos : part.start])
                pieces.append(_with_cte(body, part, change.cte))
                pos = part.body_start
        pieces.append(body[pos : part.body_start])
        pieces.append(change.body)
        pos = part.end
    pieces.append(body[pos:])
    return b"".join(pieces), root_cte


def _with_cte(body: bytes, part: MimePart, cte: str) -> bytes:
    headers = body[part.start : part.body_start]
    field = b"Content-Transfer-Encoding: " + cte.encode("ascii")
    if part.cte_range is not None:
        eol = line_ending(body, part.start, part.body_start)
        a, b = (x - part.start for x in part.cte_range)
        return headers[:a] + field + eol + headers[b:]
    # No field yet: add one at the end of the header block, before the blank line, ended as
    # the blank line is. The other header lines may end otherwise (a file with mixed line
    # endings): going by them could split the blank line's CR LF and leave a bare CR.
    blank = len(headers) - (2 if headers.endswith(b"\r\n") else 1)
    return headers[:blank] + field + headers[blank:] + headers[blank:]
