"""Property tests of the parsers hostile input reaches first (SPEC 2, 4, 6, 11).

- X-MSYS-API: any bytes, folds and encoded-words give a valid parse or one of the
  documented 550 5.6.0 texts, one printable ASCII line; RFC 2047 and folding round-trip.
- MIME walker: generated trees of any nesting, with boundaries that prefix each other,
  padding after delimiters, preambles, epilogues and a missing close delimiter, are found
  part for part, agreeing with the email package.
- Token decoder: a mutated token raises InvalidToken, unless the mutation only re-spelled
  it (percent-encoding, '=' padding): then it decodes to the same data.
"""

from __future__ import annotations

import base64
import binascii
import email
import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smtpapi_milter import xmsysapi
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.rewrite import mime
from smtpapi_milter.tokens import InvalidToken, TokenCodec, TrackingData

# --- X-MSYS-API --------------------------------------------------------------------------------

# Every text parse() may answer with (xmsysapi.py and SPEC 2).
DOCUMENTED = re.compile(
    r"X-MSYS-API (?:header must be ASCII \(use \\u escapes or RFC 2047\) or UTF-8"
    r"|encoded-word has unknown charset .+"
    r"|encoded-word is not valid .+"
    r"|is not valid JSON: .+"
    r"|must be of type 'json object'"
    r"|'[a-z_.]+' (?:elements )?must be of type '(?:json object|json array|string|boolean)'"
    r"|is invalid: .+)"
)


def parse_or_reply(value: bytes) -> xmsysapi.XMsysApi | str:
    try:
        return xmsysapi.parse(value)
    except SmtpReplyError as exc:
        reply = exc.reply
        assert (reply.code, reply.status) == ("550", "5.6.0"), reply
        assert DOCUMENTED.fullmatch(reply.text), reply.text
        assert reply.text.isascii() and reply.text.isprintable() and len(reply.text) <= 200
        return reply.text


def encoded_word(data: bytes, charset: str, encoding: str) -> bytes:
    if encoding in "bB":
        payload = base64.b64encode(data)
    else:
        payload = binascii.b2a_qp(data, header=True).replace(b"=\n", b"").replace(b"?", b"=3F")
    return b"=?" + charset.encode("ascii") + b"?" + encoding.encode() + b"?" + payload + b"?="


FOLDS = st.sampled_from([b"\r\n ", b"\r\n\t", b"\n  ", b"\r\n    "])
CHARSETS = st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "x-bogus", "zlib", "utf-16", "ascii"])
PIECES = st.one_of(
    st.sampled_from(
        [b"{", b"}", b'"campaign_id"', b'"tags"', b'"metadata"', b'"options"', b":", b",", b"["]
        + [b"]", b"true", b"false", b"null", b'"x"', b"1e999", b"NaN", b"\\u00e9", b"=?", b"?="]
    ),
    FOLDS,
    st.builds(encoded_word, st.binary(max_size=20), CHARSETS, st.sampled_from(["B", "Q", "b"])),
    st.binary(max_size=8),
)


@settings(max_examples=300)
@given(st.lists(PIECES, max_size=25).map(b"".join))
def test_header_soup_parses_or_gets_a_documented_550(value):
    parse_or_reply(value)


JSON_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "campaign_id": JSON_TEXT,
        "tags": st.lists(JSON_TEXT, max_size=5),
        "metadata": st.dictionaries(JSON_TEXT, JSON_TEXT | st.integers(), max_size=3),
        "options": st.fixed_dictionaries(
            {}, optional={"open_tracking": st.booleans(), "click_tracking": st.booleans()}
        ),
    },
)


@given(
    HEADERS,
    st.lists(st.integers(min_value=1, max_value=40), max_size=6),
    st.lists(st.sampled_from([("utf-8", "B"), ("utf-8", "Q"), ("UTF-8", "b")]), min_size=1),
    FOLDS,
)
def test_rfc2047_split_anywhere_round_trips(data, cuts, words, fold):
    """Encoded-words cut at arbitrary byte offsets (even inside a UTF-8 character would
    break one word's charset, so cuts fall between characters) and folded between them
    decode to exactly the JSON: whitespace between adjacent words is no text."""
    text = json.dumps(data, ensure_ascii=False)
    chunks, pos = [], 0
    for cut in cuts:
        if pos + cut >= len(text):
            break
        chunks.append(text[pos : pos + cut])
        pos += cut
    chunks.append(text[pos:])
    encoded = [
        encoded_word(chunk.encode("utf-8"), *words[i % len(words)])
        for i, chunk in enumerate(chunks)
    ]
    parsed = parse_or_reply(fold.join(encoded))
    assert isinstance(parsed, xmsysapi.XMsysApi), parsed
    assert parsed.raw == data


@given(JSON_TEXT, JSON_TEXT, FOLDS)
def test_fold_inside_a_string_reads_as_one_space(before, after, fold):
    """Momentum's documented unfolding: "my_awes\\n   ome" reads "my_awes ome"."""
    head = json.dumps({"campaign_id": before}, ensure_ascii=True)[:-2]  # up to the closing '"'
    tail = json.dumps(after, ensure_ascii=True)[1:] + "}"
    assume(not tail.startswith((" ", "\t")))  # the fold's own whitespace would take those too
    parsed = parse_or_reply(head.encode() + fold + tail.encode())
    assert isinstance(parsed, xmsysapi.XMsysApi), parsed
    assert parsed.campaign_id == before + " " + after


# --- MIME walker -------------------------------------------------------------------------------

BOUNDARY_CHARS = "0123456789ABCxyz'()+_,-./:=?"
LEAF_TYPES = ["text/plain", "text/html", "image/png", "application/pdf", "text/x-amp-html"]


@dataclass
class Node:
    content_type: str
    body: bytes = b""
    boundary: str = ""
    children: list[Node] = field(default_factory=list)
    quoted: bool = True
    padding: bytes = b""  # transport padding after delimiters (RFC 2046 5.1.1)
    preamble: bytes = b""
    epilogue: bytes = b""
    closed: bool = True

    def content_type_value(self) -> bytes:
        value = self.content_type.encode()
        if self.children:
            b = self.boundary.encode()
            value += b'; boundary="' + b + b'"' if self.quoted else b"; boundary=" + b
        return value

    def serialize(self, eol: bytes, headers: bool = True) -> bytes:
        head = b"Content-Type: " + self.content_type_value() + eol + eol if headers else b""
        if not self.children:
            return head + self.body.replace(b"\n", eol)
        out = head + self.preamble
        b = self.boundary.encode()
        for child in self.children:
            out += eol + b"--" + b + self.padding + eol + child.serialize(eol)
        if self.closed:
            out += eol + b"--" + b + b"--" + self.padding + eol + self.epilogue
        return out

    def leaves(self) -> list[Node]:
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


# Body lines never begin with "--", so no body line can be read as a delimiter.
BODY_LINES = st.lists(
    st.text(alphabet="abc <>=&/-é\t", max_size=30).filter(lambda s: not s.startswith("-")),
    max_size=4,
)


@st.composite
def trees(draw, depth: int = 0, used: frozenset[str] = frozenset()) -> Node:
    if depth >= 4 or draw(st.integers(0, 2)) == 0:
        lines = draw(BODY_LINES)
        return Node(draw(st.sampled_from(LEAF_TYPES)), "\n".join(lines).encode())
    # Boundaries may extend each other ("b", "b1"): a delimiter must match exactly.
    base = draw(st.sampled_from(sorted(used)) if used and draw(st.booleans()) else st.just(""))
    boundary = base + draw(st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=12))
    boundary = boundary.rstrip(" ")[:70]
    # "b--" inside "b" would be read as the close delimiter of "b" by any reader.
    assume(boundary and boundary not in used and not any(boundary == u + "--" for u in used))
    node = Node(
        draw(st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/related"])),
        boundary=boundary,
        quoted=draw(st.booleans()) or not re.fullmatch(r"[0-9A-Za-z'+_.-]+", boundary),
        padding=draw(st.sampled_from([b"", b" ", b"\t ", b"  "])),
        # Lines that start like a delimiter but are none: '#' is no boundary character.
        preamble=draw(
            st.sampled_from([b"", b"A multi-part message.", b"--" + boundary.encode() + b"#"])
        ),
        epilogue=draw(st.sampled_from([b"", b"epilogue", b"--" + boundary.encode() + b"--#"])),
    )
    inner = used | {boundary}
    node.children = draw(st.lists(trees(depth + 1, inner), min_size=1, max_size=3))
    return node


def _walker_leaves(part: mime.MimePart) -> list[mime.MimePart]:
    if not part.children:
        return [part]
    return [leaf for child in part.children for leaf in _walker_leaves(child)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), st.sampled_from([b"\r\n", b"\n"]), st.booleans())
def test_generated_mime_trees_are_found_part_for_part(tree, eol, truncate):
    assume(tree.children)
    if truncate:  # a sender cut off before the last close delimiter
        tree.closed = False
    body = tree.serialize(eol, headers=False)
    headers = [("Content-Type", tree.content_type_value())]
    root = mime.parse_structure(headers, body)
    found = _walker_leaves(root)
    expected = tree.leaves()
    assert [p.content_type for p in found] == [n.content_type for n in expected]
    wanted = [node.body.replace(b"\n", eol) for node in expected]
    if truncate and not tree.children[-1].children and wanted[-1].endswith(eol):
        wanted[-1] = wanted[-1][: -len(eol)]  # the missing delimiter's line break
    assert [body[part.body_start : part.end] for part in found] == wanted
    assert mime.untouchable_reason(root, body) is None
    # The email package reads the same leaves (it is the oracle's reader).
    message = email.message_from_bytes(b"Content-Type: " + headers[0][1] + eol + eol + body)
    theirs = [p.get_content_type() for p in message.walk() if not p.is_multipart()]
    assert theirs == [n.content_type for n in expected]


# --- token decoder -----------------------------------------------------------------------------

CODEC = TokenCodec([("prop", bytes(range(32))), ("old", bytes(range(1, 33)))])
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
DATA = st.builds(
    TrackingData,
    kind=st.sampled_from(["click", "open", "initial_open"]),
    transmission_id=st.text(max_size=20),
    message_id=st.text(max_size=20),
    rcpt_to=st.emails(),
    injection_time=st.integers(0, 2**40),
    campaign_id=st.text(max_size=64),
    tags=st.lists(st.text(max_size=10), max_size=10).map(tuple),
    target_url=st.text(max_size=100),
)


@st.composite
def mutations(draw, token: str) -> tuple[str, bool]:
    """``token`` changed one way; True when the change only re-spells the same token."""
    kind = draw(
        st.sampled_from(
            ["delete", "insert", "replace", "swap", "cut", "extend"] * 2
            + ["percent", "pad", "case"]
        )
    )
    i = draw(st.integers(0, len(token) - 1))
    char = draw(st.sampled_from(B64URL + "=%.+/ ~"))
    if kind == "delete":
        return token[:i] + token[i + 1 :], False
    if kind == "insert":
        return token[:i] + char + token[i:], False
    if kind == "replace":
        return token[:i] + char + token[i + 1 :], char == token[i]
    if kind == "swap":
        j = draw(st.integers(0, len(token) - 1))
        chars = list(token)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars), chars[i] == chars[j]
    if kind == "cut":
        return token[:i], False
    if kind == "extend":
        return token + draw(st.text(alphabet=B64URL, min_size=1, max_size=8)), False
    if kind == "percent":  # what link scanners and some clients do to URLs
        return token[:i] + "".join(f"%{ord(c):02X}" for c in token[i:]), True
    if kind == "pad":
        return token + "=" * draw(st.integers(1, 3)), True
    flipped = token[i].swapcase()
    return token[:i] + flipped + token[i + 1 :], flipped == token[i]


@settings(max_examples=400)
@given(DATA, st.data())
def test_mutated_tokens_raise_invalid_token_or_decode_unchanged(data, draw):
    token = CODEC.encode(data)
    mutated, same = draw.draw(mutations(token))
    try:
        decoded = CODEC.decode(mutated)
    except InvalidToken:
        assert not same, f"{mutated!r} only re-spells {token!r}"
        return
    assert decoded == data
    assert unquote(mutated).rstrip("=") == token, "a different spelling authenticated"


@pytest.mark.parametrize("token", ["", "=", "%", "%ZZ", "A" * 65537, "\udcff", "AQ\x00"])
def test_degenerate_tokens_are_invalid(token):
    with pytest.raises(InvalidToken):
        CODEC.decode(token)
