"""An independent judge of a rewrite: the email package and an HTML5 parser, not ours.

``judge(before, after, codec)`` checks what SPEC 4 promises for one message and returns a
report; it raises AssertionError with the reason when a promise is broken:
- the output parses and has the same MIME structure;
- every header but X-MSYS-API (and a Content-Transfer-Encoding we had to change) is as it was;
- every part other than the top text/html and text/plain parts is byte-identical;
- in the top parts, the decoded text differs only in tracked URL values and the pixels,
  and each tracked URL's token decodes to exactly the URL the sender wrote;
- every link an HTML5 parser (selectolax/Lexbor) sees that should be tracked is tracked,
  and nothing else changed;
- one open pixel in the top HTML part; no output line over 998 octets in changed parts;
- in a quoted-printable top part, every encoded line no change touches is delivered byte for
  byte, and the lines written anew are at most 76 characters (``oracle_qp``).
"""

from __future__ import annotations

import binascii
import functools
import html as htmllib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from html.entities import html5 as html5_entities
from urllib.parse import SplitResult, urlsplit

from selectolax.lexbor import LexborHTMLParser

from smtpapi_milter.rewrite.track import INITIAL_PIXEL, PIXEL

from .oracle_qp import check_qp_lines
from .oracle_url import browser_reads_same_host

TRACKING_DOMAIN = "localhost:8080"
_TOKEN = r"[A-Za-z0-9_-]+"
TRACKED = re.compile(rf"https?://{re.escape(TRACKING_DOMAIN)}/c/({_TOKEN})")
_PIXELS = re.compile(
    "|".join(
        re.escape(p).replace(
            re.escape("{url}"), rf"https?://{re.escape(TRACKING_DOMAIN)}/[oi]/{_TOKEN}"
        )
        for p in (PIXEL, INITIAL_PIXEL)
    )
)
TEMPLATE_MARKERS = ("{{", "}}", "{%", "%}", "%%", "*|", "|*", "<%", "%>", "[%", "%]", "${")


@dataclass
class Report:
    html_links: int = 0
    text_links: int = 0
    pixels: int = 0
    qp_lines_rewritten: int = 0
    changed_parts: list[str] = field(default_factory=list)


def _parse(data: bytes) -> Message:
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    return message_from_bytes(data)


def _leaves(msg: Message) -> list[Message]:
    """Leaf parts in document order, not entering attached messages."""
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        return [leaf for sub in msg.get_payload() for leaf in _leaves(sub)]
    return [msg]


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return (
        disposition == "attachment"
        or part.get_param("filename", header="content-disposition") is not None
        or part.get_param("name") is not None
    )


def top_parts(msg: Message) -> tuple[Message | None, Message | None]:
    html = text = None
    for part in _leaves(msg):
        if _is_attachment(part):
            continue
        ctype = part.get_content_type()
        if ctype == "text/html" and html is None:
            html = part
        elif ctype == "text/plain" and text is None:
            text = part
    return html, text


def eligible(url: str) -> bool:
    """Should a link with this (decoded, stripped) target be tracked?"""
    return bool(
        re.match(r"(?i)https?://[^/?#\s]", url)
        and _has_host_and_port(url)
        and not any(m in url for m in TEMPLATE_MARKERS)
        # Bytes the part's charset does not decode: each reader guesses their characters
        # (and so the URL it follows), no redirect can match them all.
        and not re.search("[\udc80-\udcff]", url)
        and not re.search(r"(?i)<!(--)?\[(if|endif)\b", url)  # Outlook's own syntax
        and len(url.encode("utf-8", "surrogatepass")) <= 4096
        and not re.match(rf"(?i)https?://{re.escape(TRACKING_DOMAIN)}(/|$)", url)
        and browser_reads_same_host(url)  # else our redirect could go elsewhere
        and _unicode_host_is_words(url)
        and _ascii_host_is_rfc3986(url)
        and _userinfo_is_rfc3986(url)
        and _last_label_is_no_number(url)
    )


# RFC 3986 reg-name: unreserved and sub-delims (no escapes; ":" only in an IPv6 literal).
_REG_NAME_ASCII = set("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=")


def _authority_split(url: str) -> SplitResult | None:
    """``url`` split as a browser bounds its authority (a backslash ends it, like a slash),
    or None if urllib refuses it."""
    try:
        return urlsplit(url.replace("\\", "/"))
    except ValueError:
        return None


def _ascii_host_is_rfc3986(url: str) -> bool:
    """The README's rule that RFC 3986 and a browser must read the same host: an ASCII
    character RFC 3986 does not allow in a host (a backtick, say, which browsers take) leaves
    the link untracked (fuzz finding: ``http://a948.```g.akamai.net/...``)."""
    parts = _authority_split(url)
    if parts is None:
        return False
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal; browser_reads_same_host judges it
        return True
    return all(not c.isascii() or c in _REG_NAME_ASCII for c in host)


def _userinfo_is_rfc3986(url: str) -> bool:
    """The README's rule for user info: RFC 3986's unreserved characters, sub-delims and ":"
    only, without escapes. A browser percent-encodes anything else there (a space, U+FFFD)
    and reads the same host, but such a link is no plain RFC 3986 one (fuzz finding:
    ``http://www.provantag\ufffdDelivered-To: xxx@xxx.coyNet?...``)."""
    parts = _authority_split(url)
    if parts is None:
        return False
    userinfo, at, _ = parts.netloc.rpartition("@")
    return not at or all(c in _USERINFO for c in userinfo)


_USERINFO = _REG_NAME_ASCII | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ:")


def _last_label_is_no_number(url: str) -> bool:
    """The README's rule against number-like hosts: a name whose last label starts with a
    digit is left untracked unless the host is a dotted-decimal IPv4 address (WHATWG reads
    ``0x7f.1`` or ``127.1`` as an address; no real top-level domain starts with a digit).
    Fuzz finding: ``http://5891&m=101BN3c3ce68600277550d``, a host of one such label."""
    parts = _authority_split(url)
    if parts is None:
        return False
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        return True
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if not last[:1].isdigit() or not last[:1].isascii():
        return True
    try:  # dotted decimal as written (no trailing dot, no leading zeros)
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


def _unicode_host_is_words(url: str) -> bool:
    """The README's rule for hosts beyond ASCII: only letters and digits (a symbol such as
    U+00AC NOT SIGN in a host is a spoofing tool, never a real domain's), written as IDNA
    will look them up: NFKC-stable (a fuzz finding, ``ww\u00b2w.example``: IDNA maps the
    superscript two to ``2``, so the host written is not the host a browser visits) and
    without the characters IDNA 2003 and 2008 spell differently (\u00df, \u1e9e, \u03c2)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return False
    host = netloc.rpartition("@")[2]  # as written: hostname would lower-case it
    if not host.startswith("["):
        host = host.partition(":")[0]
    if host.isascii():
        return True
    return unicodedata.is_normalized("NFKC", host) and all(
        c.isascii() or (c.isalnum() and c not in "\u00df\u1e9e\u03c2") for c in host
    )


def _has_host_and_port(url: str) -> bool:
    """A browser can follow it (WHATWG URL): a host without forbidden code points, and a port
    (if any) that is a number. For http(s) a backslash ends the authority like a slash."""
    try:
        parts = urlsplit(url.replace("\\", "/"))
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return False
    host = parts.netloc.rpartition("@")[2]
    if host.startswith("["):
        return True  # an IPv6 literal: urlsplit has checked its brackets
    return bool(parts.hostname) and not re.search(r"[\x00-\x20#/:<>?@\[\\\]^|\x7f]", parts.hostname)


def _structure(msg: Message) -> list[str]:
    return [p.get_content_type() for p in msg.walk()]


KNOWN_CTE = {"", "7bit", "8bit", "binary", "quoted-printable", "base64"}


def _cte(part: Message) -> str:
    """The transfer encoding as a tolerant MUA reads it ("base64;" and '"base64"' are base64,
    "8bits" 8bit)."""
    cte = str(part.get("Content-Transfer-Encoding", "")).split(";")[0].strip()
    cte = cte.strip("\"'").strip().lower()  # quoted, as some mailers write it
    return {"7-bit": "7bit", "8-bit": "8bit", "7bits": "7bit", "8bits": "8bit"}.get(cte, cte)


def _raw(part: Message) -> bytes:
    """The part's body as it is on the wire (the email package keeps it as surrogates)."""
    return part._payload.encode("ascii", "surrogateescape")


def _decoded(part: Message) -> str | None:
    """The part's text, or None when its transfer encoding or charset is unknown: such a
    part is opaque (RFC 2045 6.4) and must come out unchanged."""
    cte = _cte(part)
    if cte not in KNOWN_CTE:
        return None
    # The raw payload: get_payload() would decode 8-bit bytes with the charset first.
    raw = _raw(part)
    if cte == "quoted-printable":
        data = binascii.a2b_qp(raw)
    elif cte == "base64":
        try:
            # Text after the padding would be lost by a forgiving decoder: such a part is
            # opaque, like an unknown encoding. Stray non-alphabet characters are skipped.
            pad = raw.find(b"=")
            if pad >= 0 and re.search(rb"[A-Za-z0-9+/]", raw[pad:]):
                return None
            data = binascii.a2b_base64(raw)
        except binascii.Error:
            return None
    else:
        data = part.get_payload(decode=True) or b""
    try:
        charset = part.get_content_charset()
        if charset is None and part.get_param("charset") is not None:
            return None  # named, but not in ASCII: no charset anyone can decode with
        text = data.decode(charset or "us-ascii", "surrogateescape")
        # A charset that cannot give the same bytes back leaves no way to change the part.
        return text if text.encode(charset or "us-ascii", "surrogateescape") == data else None
    except (LookupError, UnicodeError, ValueError):
        return None


def judge(
    before: bytes,
    after: bytes,
    codec,
    expect_tracking: bool = True,
    *,
    clicks: bool = True,
    opens: bool = True,
) -> Report:
    """Check ``after`` against ``before`` (see the module docstring); ``clicks``/``opens``
    False: the message was tracked without click tracking, or without the open pixel."""
    report = Report()
    m_in, m_out = _parse(before), _parse(after)
    assert _structure(m_in) == _structure(m_out), "MIME structure changed"
    _check_headers(m_in, m_out)
    html_in, text_in = top_parts(m_in)
    html_out, text_out = top_parts(m_out)
    leaves_in, leaves_out = _leaves(m_in), _leaves(m_out)
    for p_in, p_out in zip(leaves_in, leaves_out, strict=True):
        if p_in is html_in or p_in is text_in:
            continue
        if p_in is not m_in:  # the top level's headers are checked on their own
            assert p_in.items() == p_out.items(), "headers of an untracked part changed"
        assert _payload(p_in) == _payload(p_out), "an untracked part changed"
    for part_in, part_out, check in (
        (html_in, html_out, functools.partial(_check_html, clicks=clicks, opens=opens)),
        (text_in, text_out, functools.partial(_check_text, clicks=clicks)),
    ):
        if part_in is None:
            continue
        # As it was, or as re-encoding in each possible line ending leaves it.
        wanted = [_decoded(part_in)]
        wanted += [_expected(part_in, part_out, eol) for eol in _line_endings(part_in, before)]
        if wanted[0] is None or not expect_tracking:
            assert _payload(part_in) == _payload(part_out), "an untrackable part changed"
        else:
            which, changes = _check_any(check, wanted, _decoded(part_out), codec, report)
            if _cte(part_in) == _cte(part_out) == "quoted-printable":
                assert which == 0, "quoted-printable text changed beyond the tracked links"
                report.qp_lines_rewritten += check_qp_lines(
                    _raw(part_in), _raw(part_out), wanted[0], part_in.get_content_charset(), changes
                )
    _check_lines(before, after)
    return report


def _expected(part_in: Message, part_out: Message, eol: str) -> str | None:
    """The text of a top part as the rewrite must leave it apart from links and pixels."""
    text = _decoded(part_in)
    if text is not None and _cte(part_in) in ("", "7bit", "8bit"):
        # SPEC 12: a changed 7bit/8bit part has its bare CRs fixed (into the part's own
        # line ending: CRLF on the wire, LF in an LF-only file).
        text = re.sub("\r(?!\n)", eol, text)
    if text is not None and _cte(part_out) == "quoted-printable":
        # Quoted-printable line breaks are canonical: re-encoding writes each one (LF or
        # CRLF in a mixed part) in the part's own line ending.
        text = re.sub("\r?\n", eol, text)
    return text


def _line_endings(part: Message, message: bytes) -> list[str]:
    """The part's own line ending; both candidates when the part has none of its own in a
    message that mixes them (the rewrite then follows the raw body, hidden from us here)."""
    raw = part._payload if isinstance(part._payload, str) else ""
    nl = raw.find("\n")
    if nl >= 0:
        return ["\r\n" if nl > 0 and raw[nl - 1] == "\r" else "\n"]
    if b"\r\n" not in message:
        return ["\n"]
    return ["\r\n", "\n"] if re.search(rb"(?<!\r)\n", message) else ["\r\n"]


def _check_any(check, candidates: list[str], text_out: str, codec, report: Report):
    """The first candidate ``check`` accepts → (its index, the changes ``check`` found)."""
    for i, text_in in enumerate(candidates):
        try:
            return i, check(text_in, text_out, codec, report)
        except AssertionError:
            if i + 1 == len(candidates):
                raise
    raise AssertionError("no candidate text")


def _payload(part: Message):
    # The raw payload: get_payload() decodes 8-bit text with the declared charset ('replace',
    # so lossy) and raises on a charset name it cannot look up.
    payload = part._payload
    if isinstance(payload, list):  # an attached message: its fields and payloads in turn
        # (as_bytes() would re-serialise it and can fail on 8-bit header text)
        return [([(k, str(v)) for k, v in sub.items()], _payload(sub)) for sub in payload]
    return payload


def _check_headers(m_in: Message, m_out: Message) -> None:
    def kept(msg: Message) -> list[tuple[str, str]]:
        skip = {"x-msys-api", "content-transfer-encoding"}
        return [(k, v) for k, v in msg.items() if k.lower() not in skip]

    assert kept(m_in) == kept(m_out), "message headers changed"
    assert "X-MSYS-API" not in m_out, "X-MSYS-API was not removed"
    if m_in.get("Content-Transfer-Encoding") != m_out.get("Content-Transfer-Encoding"):
        assert m_out.get("Content-Transfer-Encoding") == "quoted-printable"


def _check_lines(before: bytes, after: bytes) -> None:
    longest_in = max((len(line) for line in before.split(b"\n")), default=0)
    if longest_in <= 999:  # 998 octets + CR
        longest_out = max(len(line.rstrip(b"\r")) for line in after.split(b"\n"))
        assert longest_out <= 998, f"output line of {longest_out} octets"


def _restore(
    before: str, after: str, codec, same: Callable[[str, str], bool]
) -> list[tuple[int, int, int, int]]:
    """Match ``after`` against ``before`` around each tracked URL; return where they are.

    Everything between tracked URLs must be identical in both texts, and the raw text each
    tracked URL replaced must be ``same`` as the URL its token carries. Where the text after
    a URL occurs more than once, the occurrence whose raw value fits the token is the one.
    Each URL's place: (start, end) of the raw text in ``before``, (start, end) in ``after``.
    """
    pos_in = pos_out = 0
    places = []
    matches = list(TRACKED.finditer(after))
    for i, m in enumerate(matches):
        segment = after[pos_out : m.start()]
        assert before.startswith(segment, pos_in), f"text changed near offset {pos_in}"
        pos_in += len(segment)
        last = i + 1 == len(matches)
        following = after[m.end() : None if last else matches[i + 1].start()]
        url = codec.decode(m.group(1)).target_url
        end_in = _raw_end(before, pos_in, following, url, same, last)
        assert end_in >= 0, f"text after a tracked URL changed (offset {pos_in})"
        places.append((pos_in, end_in, m.start(), m.end()))
        pos_in, pos_out = end_in, m.end()
    assert before[pos_in:] == after[pos_out:], "text changed at the end of the part"
    return places


def _raw_end(before: str, start: int, following: str, url: str, same, last: bool) -> int:
    if last:
        end = len(before) - len(following)
        if not before.endswith(following) or end <= start:
            return -1
        assert same(before[start:end], url), f"token URL {url!r} != {before[start:end]!r}"
        return end
    end = before.find(following, start + 1)
    while end >= 0 and not same(before[start:end], url):
        end = before.find(following, end + 1)
    assert end < 0 or same(before[start:end], url), f"token URL {url!r} != {before[start:end]!r}"
    return end


_NAMED_REFERENCE = re.compile(r"&([A-Za-z][A-Za-z0-9]*)(;?)")
_NUMERIC_REFERENCE = re.compile(r"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+));?")


def _numeric(m: re.Match[str]) -> str:
    if len((m.group(1) or m.group(2)).lstrip("0")) > 8:
        return "\ufffd"  # past U+10FFFF; html.unescape's int() would refuse 4300+ digits
    # html.unescape drops control code points; HTML5 keeps them (a parse error, not a loss).
    decoded = htmllib.unescape(m.group(0))
    if decoded:
        return decoded
    return chr(int(m.group(1), 16) if m.group(1) else int(m.group(2)))


def unescape_attribute(raw: str) -> str:
    """An attribute value as an HTML5 tokenizer reads it, written apart from the library.

    html.unescape applies the rules for text; in an attribute a named reference without ';'
    followed by '=' or an alphanumeric stays as written (``?a=1&copy=2``, ``&ampx``), and NUL
    reads as U+FFFD.
    """
    out, pos = [], 0
    for m in _NAMED_REFERENCE.finditer(raw):
        name, semicolon = m.groups()
        following = raw[m.end() : m.end() + 1]
        if semicolon:
            decoded = html5_entities.get(name + ";")
        else:
            decoded = None if following == "=" else html5_entities.get(name)
        out.append(_NUMERIC_REFERENCE.sub(_numeric, raw[pos : m.start()]))
        out.append(m.group(0) if decoded is None else decoded)
        pos = m.end()
    out.append(_NUMERIC_REFERENCE.sub(_numeric, raw[pos:]))
    return "".join(out).replace("\0", "\ufffd")


def link_target(href: str) -> str:
    """The URL a browser follows for an href value already read by an HTML parser: trimmed,
    and with ASCII tab and newline removed anywhere (WHATWG URL parsing)."""
    return re.sub("[\t\n\r]", "", href.strip(" \t\n\r\f"))


def _same_html(raw: str, url: str) -> bool:
    return link_target(unescape_attribute(raw)) == url


def _check_html(before: str, after: str, codec, report: Report, clicks=True, opens=True):
    """Judge one HTML part → the changes: (start, end) in ``before`` of each tracked URL's
    raw value, and (at, at) where each pixel went in."""
    if before == after == "":
        return []  # an empty part (maybe one with no body at all) may stay without a pixel
    pixels = list(_PIXELS.finditer(after))
    report.pixels = len(pixels)
    opened = sum("/o/" in p.group() for p in pixels)
    if opens:
        assert opened >= 1, "no open pixel in the top HTML part"
        assert opened == 1, "not exactly one open pixel"
    else:
        assert opened == 0, "an open pixel without open tracking"
    stripped = _PIXELS.sub("", after)
    places = _restore(before, stripped, codec, _same_html)
    report.html_links = len(places)
    _check_links_html5(before, stripped, clicks)
    removed = 0  # pixel text before this one, gone from ``stripped``
    changes = [(start, end) for start, end, _, _ in places]
    for pixel in pixels:
        at = pixel.start() - removed
        removed += len(pixel.group())
        # Where ``at`` in ``stripped`` is in ``before``: past the last URL before it.
        shift = next(((e_in - e_out) for _, e_in, _, e_out in reversed(places) if e_out <= at), 0)
        changes.append((at + shift, at + shift))
    return sorted(changes)


def _links(text: str) -> list[tuple[str, str, str | None]]:
    """Every <a>/<area> with an href, as an HTML5 parser (Lexbor) reads the document.

    Not lxml: libxml2 is no HTML5 parser (it closes <style/> at once, where browsers and the
    spec read everything after it as style text). Undecodable bytes, kept as lone
    surrogates, go in as private-use characters (no HTML syntax, like any other letter) and
    come out as the same surrogates, so that eligible() still sees which bytes they were
    (a text already holding those private-use characters: U+FFFD, as a browser shows them).
    """
    hidden = _UNDECODABLE.search(text) is not None and _STAND_INS.search(text) is None
    if hidden:
        text = _UNDECODABLE.sub(lambda m: chr(ord(m.group()) + _STAND_IN_OFFSET), text)
    tree = LexborHTMLParser(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    found = []
    for node in tree.css("a, area"):
        href = node.attributes.get("href")
        if href is not None:
            if hidden:
                href = _STAND_INS.sub(lambda m: chr(ord(m.group()) - _STAND_IN_OFFSET), href)
            found.append((node.tag, href, node.attributes.get("data-msys-clicktrack")))
    return found


_UNDECODABLE = re.compile("[\udc80-\udcff]")
_STAND_IN_OFFSET = 0x10FF00 - 0xDC80  # U+10FF00..U+10FF7F: plane 16 private use
_STAND_INS = re.compile("[\U0010ff00-\U0010ff7f]")


def _check_links_html5(before: str, after: str, clicks: bool) -> None:
    links_in, links_out = _links(before), _links(after)
    assert len(links_in) == len(links_out), "the HTML5 parser sees a different number of links"
    for (tag, href_in, opt), (_, href_out, _) in zip(links_in, links_out, strict=True):
        should = clicks and eligible(link_target(href_in)) and opt != "0"
        if should:
            assert TRACKED.fullmatch(href_out), f"<{tag} href={href_in!r}> not tracked"
        else:
            assert href_out == href_in, f"<{tag} href={href_in!r}> changed to {href_out!r}"


def _check_text(before: str, after: str, codec, report: Report, clicks=True):
    """Judge one plain-text part → the changes: (start, end) in ``before`` of each URL."""
    places = _restore(before, after, codec, lambda raw, url: raw == url)
    report.text_links = len(places)
    changes = [(start, end) for start, end, _, _ in places]
    if not clicks:
        assert report.text_links == 0, "text URLs tracked without click tracking"
        return changes
    # A URL starts at a word boundary ("moreHTTP://x" is no link start), as linkifiers do,
    # and ends at white space, any control character (C1 included: clients break there) or
    # one of the characters RFC 3986 appendix C names as delimiting URIs in text: < > ".
    url = r"(?i)(?<![a-z0-9])https?://[^\s\x00-\x1f\x7f-\x9f<>\"]+"
    for m in re.finditer(url, TRACKED.sub("", after)):
        assert not eligible(m.group(0).rstrip(".,;:!?'\")]}>")), (
            f"text URL left untracked: {m.group(0)!r}"
        )
    return changes
