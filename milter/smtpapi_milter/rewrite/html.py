"""Find links in an HTML part without re-serialising it.

The product promise is fidelity: the HTML we deliver equals the HTML we received except for
the rewritten href values and the open pixel. A DOM round trip (lxml, html5lib) would normalise
quoting, entities, case and whitespace, so instead this module tokenises the text just far
enough to know where tags, comments and raw-text elements are, and reports source offsets.
Someone else splices new values in at those offsets.

Tokenising follows the HTML5 tokenizer wherever it decides what is a tag or an attribute:
quoted ``>`` does not end a tag, comments and ``<style>``/``<script>`` hide markup, an
unterminated tag or quote swallows the rest of the document. One deliberate departure:
Outlook's downlevel-hidden conditional comments (``<!--[if mso]> ... <![endif]-->``) are read
as markup, because Outlook renders their content and VML buttons live there.

Speed matters (a milter sees every message): a single possessive regex consumes text and all
uninteresting tags in C, and the Python loop only wakes up for links, comments, raw-text
elements and the few structural tags we report.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import NamedTuple

from .entities import unescape_attribute, unescape_text

__all__ = ["HtmlLink", "HtmlScan", "scan_html", "unescape_attribute"]


class HtmlLink(NamedTuple):  # one per link or step of each new body: a tuple is made 3x faster
    """One ``href`` attribute of ``<a>``, ``<area>`` or a VML element, with source offsets.

    ``text[start:end]`` is the raw attribute value (inside the quotes when quoted). For an
    attribute written without a value, ``start == end`` is the offset just past its name.
    """

    start: int
    end: int
    url: str
    element: str
    name: str | None
    unsubscribe: bool
    opt_out: bool
    in_conditional_comment: bool
    text_url: str | None


@dataclass(frozen=True, slots=True)
class HtmlScan:
    """What the rewriter needs to know about one HTML document.

    The structural offsets (``body_start_end``, ``body_end_start``, ``html_end_start``) and
    ``base_href`` only consider markup every client sees: tags inside comments, raw text and
    Outlook conditional comments are ignored, so a pixel is never inserted where only Outlook
    would render it. ``tail_start`` is where an unterminated tag, comment or raw-text element
    begins that swallows the end of the document: text appended to the document would not
    render (None when the document ends outside any such construct).
    """

    links: list[HtmlLink]
    body_start_end: int | None
    body_end_start: int | None
    html_end_start: int | None
    base_href: str | None
    tail_start: int | None = None
    # Where content may go first without moving the document's preamble: after <body ...>;
    # failing that after </head>, <html ...> or the doctype (text before a doctype puts
    # browsers in quirks mode); None when the document has none of them.
    content_start: int | None = None
    # Links found after ``max_links`` were kept (scan_html): counted, not kept.
    links_beyond: int = 0


# Attributes after the tag name, up to and including the closing '>' (HTML5 "before attribute
# name" ... "after attribute value" states). Possessive everywhere: each character has exactly
# one reading, and a failed match means end-of-input inside the tag.
#
# A repeated group is made possessive as an atomic group, (?>(?:...)*), never as (?:...)*+:
# CPython before 3.11.5 matched possessive repeats of a group wrongly (gh-106052, gh-100061),
# and Debian 12's Python is 3.11.2. There, _SKIP ran from a template's "<!--[if mso]>"
# (hidden Outlook content, in every MJML head) to the end of the text, and read a revealed
# "<!--[if !mso]><!-->" as hidden: 40 of the corpus's 667 links were found.
# tests/test_regex_portability.py keeps every pattern of the package free of them.
def _tail(inert: str = "", quoted_inert: str = "", close: str = ">") -> str:
    """The tail up to ``close``; a tag holding an ``inert`` character in a name or unquoted
    value, or a ``quoted_inert`` one in a quoted value, does not match at all."""
    return (
        rf"(?>(?:[\t\n\f\r /]++"
        rf"|[^\t\n\f\r />{inert}][^\t\n\f\r />={inert}]*+"
        rf"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"{quoted_inert}]*+"|'[^'{quoted_inert}]*+'"""
        rf"""|(?!["'])[^\t\n\f\r >{inert}]*+)"""
        rf"|(?![\t\n\f\r ]*+=)))*){close}"
    )


_TAIL = _tail()
_NAME = r"[A-Za-z][^\t\n\f\r />]*+"
_START_TAG = re.compile(rf"<({_NAME}){_TAIL}")
_END_TAG = re.compile(rf"</({_NAME}){_TAIL}")
_ATTRIBUTE = re.compile(
    r"[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r />=]*+)"
    r"""(?>(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"([^"]*+)"|'([^']*+)'|([^\t\n\f\r >]*+)))?)"""
)

# Elements whose content is text, not markup (raw text and RCDATA in HTML5 terms). The script
# "double escaped" states (a "<!--<script>" inside a script) are not modelled: a script's
# content never holds links we track, and mail clients drop scripts anyway.
_RAW_TEXT = ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")
_END_DELIMITER = r"(?![^\t\n\f\r />])"
_RAW_TEXT_END = {name: re.compile(rf"</(?i:{name}){_END_DELIMITER}") for name in _RAW_TEXT}

# Everything the Python loop need not see: text, any start tag except the ones we act on, any
# end tag except </body> and </html>, a '<' that opens nothing, and some Outlook conditional
# comments (below).
_WANTED_START = ("a", "area", "base", "body", "html", *_RAW_TEXT)
_WANTED_END = ("body", "head", "html")


def _name_except(names: tuple[str, ...], prefix: str = "") -> str:
    """A tag name that is none of ``names`` (ASCII case aside) and does not start ``prefix``.

    The tokenizer tries this at every tag: its first letter settles most (td, div, img) with
    one class test, and only a name starting like a wanted one pays a short lookahead.
    """
    rests: dict[str, list[str]] = {}
    for name in names:
        rests.setdefault(name[0], []).append(re.escape(name[1:]) + _END_DELIMITER)
    if prefix:
        rests.setdefault(prefix[0], []).append(re.escape(prefix[1:]))
    others = "".join(c + c.upper() for c in string.ascii_lowercase if c not in rests)
    branches = [f"[{others}]"]
    branches += [f"[{c}{c.upper()}](?!(?i:{'|'.join(r)}))" for c, r in sorted(rests.items())]
    return f"(?:{'|'.join(branches)})" + r"[^\t\n\f\r />]*+"


_START_UNWANTED = _name_except(_WANTED_START, "v:")
_END_UNWANTED = _name_except(_WANTED_END)

# A downlevel-hidden conditional comment closed by "<![endif]-->" whose content is only text
# and tags the loop need not see: MJML writes dozens (table cells for Outlook). Such content
# changes nothing however it is read, so only where the comment ends matters. No tag in the
# content holds a '<' (not even quoted), so none can hide or cross the first "<![endif]",
# where the loop ends Outlook's part; and no "-->" (nor a quoted '>') is allowed either, so
# other clients' comment ends there too. Anything else is left to the loop.
_INERT_TAIL = _tail("<", "<>", r"(?<!--)(?<!--!)>")
_PLAIN_CONDITIONAL = (
    r"<!--\[(?i:if)\b[^\]>]{0,256}+\]>(?![\t\n\f\r ]*+<!)"
    rf"(?>(?:[^<-]++|-(?!-!?>)|<{_START_UNWANTED}{_INERT_TAIL}|</{_END_UNWANTED}{_INERT_TAIL}"
    r"|<(?![A-Za-z!/?]))*)"
    r"<!\[(?i:endif)\]-->"
)
_SKIP_UNITS = rf"[^<]++|<{_START_UNWANTED}{_TAIL}|</{_END_UNWANTED}{_TAIL}|<(?![A-Za-z!/?])"
_SKIP = re.compile(rf"(?>(?:{_SKIP_UNITS}|{_PLAIN_CONDITIONAL})*)")

# Outlook conditional comments; the expression is short ("gte mso 9", "(mso)|(IE)"), and the
# bound keeps a stray "<!--[if" from scanning the whole document.
_CONDITIONAL_START = re.compile(r"<!--\[if\b[^\]>]{0,256}+\]>", re.IGNORECASE)
_CONDITIONAL_END = re.compile(r"<!\[endif\](?>(?:-*+>)?)", re.IGNORECASE)
_REVEALED = re.compile(r"[\t\n\f\r ]*+<!")
_COMMENT_CLOSE = re.compile(r"--!?>")
_A_CLOSE = re.compile(rf"</[aA]{_END_DELIMITER}")
_ANY_TAG = re.compile(r"<[^>]*+>?")
_URL_LIKE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)

# Link text longer than this is not a URL someone reads; the bound keeps many unclosed <a>
# tags before one far </a> from costing quadratic time.
_MAX_LINK_TEXT = 8192

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_WHITESPACE = "\t\n\f\r "
# The URL parser drops ASCII tab and newline anywhere in a URL (WHATWG URL, "basic URL
# parser"): the link a browser follows never holds one, so neither may the redirect target.
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")


def scan_html(text: str, max_links: int | None = None) -> HtmlScan:
    """Tokenise ``text`` (decoded HTML) and report its links and structural offsets.

    At most ``max_links`` links are kept (the first, in document order): a part of nothing
    but links must not cost memory in proportion to its size. Never raises: malformed
    markup is read the way an HTML5 parser would read it.
    """
    scanner = _Scanner(text, max_links)
    scanner.scan(0, len(text), in_conditional=False)
    return HtmlScan(
        links=scanner.links,
        body_start_end=scanner.body_start_end,
        body_end_start=scanner.body_end_start,
        html_end_start=scanner.html_end_start,
        content_start=scanner.content_start(),
        base_href=scanner.base_href,
        tail_start=scanner.tail_start,
        links_beyond=scanner.links_beyond,
    )


def _ascii_lower(name: str) -> str:
    # HTML lower-cases ASCII only; str.lower would turn 'İ' into two characters.
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


def _attribute_text(raw: str | None) -> str:
    if raw is None:
        return ""
    # The tokenizer turns NUL in an attribute value into U+FFFD.
    return unescape_attribute(raw.replace("\0", "\ufffd") if "\0" in raw else raw)


def _comment_end(text: str, pos: int, end: int) -> int:
    """End of a comment whose '<!--' ends at ``pos`` (HTML5 comment states); -1 if none."""
    if text.startswith(">", pos, end):
        return pos + 1
    if text.startswith("->", pos, end):
        return pos + 2
    close = _COMMENT_CLOSE.search(text, pos, end)
    return -1 if close is None else close.end()


def _bogus_comment_end(text: str, pos: int, end: int) -> int:
    close = text.find(">", pos, end)
    return -1 if close < 0 else close + 1


class _NextMatch:
    """Next match of a pattern at or after a position, remembered between calls.

    Positions only move forward, so one search serves every caller until it is passed; a
    document full of unclosed constructs then costs linear, not quadratic, time.
    """

    __slots__ = ("_end", "_found", "_from", "_pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self._from = -1
        self._end = -1
        self._found: re.Match[str] | None = None

    def find(self, text: str, pos: int, end: int) -> re.Match[str] | None:
        found = self._found
        if self._end == end and self._from <= pos and (found is None or found.start() >= pos):
            return found
        found = self._pattern.search(text, pos, end)
        self._from, self._end, self._found = pos, end, found
        return found


class _Scanner:
    """Tokeniser state for one document; ``scan`` walks a region of it."""

    def __init__(self, text: str, max_links: int | None = None) -> None:
        self.text = text
        self.links: list[HtmlLink] = []
        self.max_links = len(text) if max_links is None else max_links
        self.links_beyond = 0
        self.body_start_end: int | None = None
        self.body_end_start: int | None = None
        self.html_end_start: int | None = None
        self.head_end_end: int | None = None
        self.html_start_end: int | None = None
        self.doctype_end: int | None = None
        self.base_href: str | None = None
        self.tail_start: int | None = None
        self._a_close = _NextMatch(_A_CLOSE)
        self._conditional_end = _NextMatch(_CONDITIONAL_END)

    def scan(self, pos: int, end: int, in_conditional: bool) -> None:
        """Tokenise ``text[pos:end]``; nothing in it can reach past ``end``."""
        text = self.text
        while True:
            pos = _SKIP.match(text, pos, end).end()
            if pos >= end:
                return
            pos = self._markup(pos, end, in_conditional)

    def content_start(self) -> int | None:
        for offset in (self.body_start_end, self.head_end_end, self.html_start_end):
            if offset is not None:
                return offset
        return self.doctype_end

    def _ends(self, start: int, found: int, end: int) -> int:
        """Where scanning resumes after the construct at ``start`` that ends at ``found``.

        ``found`` -1 means it never ends and swallows the rest of the region; at the end of
        the document, that is where appended text would disappear.
        """
        if found >= 0:
            return found
        if end == len(self.text) and self.tail_start is None:
            self.tail_start = start
        return end

    def _markup(self, pos: int, end: int, in_conditional: bool) -> int:
        """Handle the construct opened by the '<' at ``pos``; return where scanning resumes."""
        after = self.text[pos + 1]
        if after == "!":
            return self._declaration(pos, end, in_conditional)
        if after == "/":
            return self._end_tag(pos, end, in_conditional)
        if after == "?":
            return self._ends(pos, _bogus_comment_end(self.text, pos + 2, end), end)
        if after.isascii() and after.isalpha():
            return self._start_tag(pos, end, in_conditional)
        return pos + 1

    def _declaration(self, pos: int, end: int, in_conditional: bool) -> int:
        text = self.text
        if not text.startswith("<!--", pos, end):
            # DOCTYPE, <![CDATA[ (a bogus comment outside SVG/MathML), <![if ...]> and the like.
            found = _bogus_comment_end(text, pos + 2, end)
            if (
                found >= 0
                and not in_conditional
                and self.doctype_end is None
                and _ascii_lower(text[pos + 2 : pos + 9]) == "doctype"
            ):
                self.doctype_end = found
            return self._ends(pos, found, end)
        conditional = _CONDITIONAL_START.match(text, pos, end)
        if conditional is None:
            return self._ends(pos, _comment_end(text, pos + 4, end), end)
        if in_conditional:
            # Outlook does not nest conditionals: an inner opener is inert.
            return conditional.end()
        return self._conditional(conditional, end)

    def _conditional(self, opener: re.Match[str], end: int) -> int:
        """Scan a downlevel-hidden conditional comment as markup seen by Outlook."""
        text = self.text
        start, content = opener.span()
        if _REVEALED.match(text, content, end):
            # "<!--[if !mso]><!-->" (downlevel-revealed) and "<!--[if x]><![endif]-->" close
            # right here for every client: an ordinary comment followed by normal markup.
            return self._ends(start, _comment_end(text, start + 4, end), end)
        closer = self._conditional_end.find(text, content, end)
        comment_end = _comment_end(text, start + 4, end)  # where every other client sees it end
        if closer is None:
            # Without <![endif] this is no conditional; read it as the HTML5 comment it is.
            return self._ends(start, comment_end, end)
        if 0 <= comment_end <= closer.start():
            # A "-->" before <![endif] (an inner comment, say) ends the comment there for all
            # but Outlook: up to it is Outlook's alone, what follows is live for every client
            # (a tag there may even run past the endif).
            self.scan(content, comment_end, in_conditional=True)
            return comment_end
        self.scan(content, closer.start(), in_conditional=True)
        # Other clients read on to the first "-->", normally the closer's own ("<![endif]-->");
        # what Outlook sees after a bare "<![endif]>" is still a comment to them.
        hidden_to = comment_end if comment_end >= 0 else end
        if hidden_to > closer.end():
            self.scan(closer.end(), hidden_to, in_conditional=True)
        return self._ends(start, max(closer.end(), comment_end) if comment_end >= 0 else -1, end)

    def _end_tag(self, pos: int, end: int, in_conditional: bool) -> int:
        text = self.text
        if pos + 2 >= end:
            # "</" at the very end is text, but "</" before anything appended is not.
            return self._ends(pos, -1, end)
        first = text[pos + 2]
        if first == ">":
            return pos + 3
        if not (first.isascii() and first.isalpha()):
            return self._ends(pos, _bogus_comment_end(text, pos + 2, end), end)
        tag = _END_TAG.match(text, pos, end)
        if tag is None:
            return self._ends(pos, -1, end)
        if not in_conditional:
            name = _ascii_lower(tag.group(1))
            if name == "body":
                self.body_end_start = pos
            elif name == "html":
                self.html_end_start = pos
            elif name == "head" and self.head_end_end is None:
                self.head_end_end = tag.end()
        return tag.end()

    def _start_tag(self, pos: int, end: int, in_conditional: bool) -> int:
        tag = _START_TAG.match(self.text, pos, end)
        if tag is None:
            # End of input inside a tag: HTML5 drops the tag and everything after it.
            return self._ends(pos, -1, end)
        name = _ascii_lower(tag.group(1))
        if name in ("a", "area") or name.startswith("v:"):
            self._link(tag, name, end, in_conditional)
        elif name in _RAW_TEXT_END:
            closer = _RAW_TEXT_END[name].search(self.text, tag.end(), end)
            return self._ends(pos, -1 if closer is None else closer.start(), end)
        elif not in_conditional:
            self._structural(tag, name)
        return tag.end()

    def _structural(self, tag: re.Match[str], name: str) -> None:
        if name == "body" and self.body_start_end is None:
            self.body_start_end = tag.end()
        elif name == "html" and self.html_start_end is None:
            self.html_start_end = tag.end()
        elif name == "base" and self.base_href is None:
            href = self._attributes(tag).get("href")
            if href is not None:
                self.base_href = _url(href[2])

    def _attributes(self, tag: re.Match[str]) -> dict[str, tuple[int, int, str | None]]:
        """Attribute name -> (value start, value end, raw value or None); the first wins."""
        attributes: dict[str, tuple[int, int, str | None]] = {}
        for attribute in _ATTRIBUTE.finditer(self.text, tag.end(1), tag.end() - 1):
            name = _ascii_lower(attribute.group(1))
            if name in attributes:
                continue
            group = attribute.lastindex or 1
            if group == 1:
                attributes[name] = (attribute.end(1), attribute.end(1), None)
            else:
                value = attribute.group(group)
                attributes[name] = (attribute.start(group), attribute.end(group), value)
        return attributes

    def _link(self, tag: re.Match[str], element: str, end: int, in_conditional: bool) -> None:
        attributes = self._attributes(tag)
        href = attributes.get("href")
        if href is None:
            return
        if len(self.links) >= self.max_links:
            self.links_beyond += 1
            return
        linkname = attributes.get("data-msys-linkname")
        self.links.append(
            HtmlLink(
                start=href[0],
                end=href[1],
                url=_url(href[2]),
                element=element,
                name=None if linkname is None else _attribute_text(linkname[2]),
                unsubscribe=_flag(attributes, "data-msys-unsubscribe") == "1",
                opt_out=_flag(attributes, "data-msys-clicktrack") == "0",
                in_conditional_comment=in_conditional,
                text_url=self._text_url(tag.end(), end) if element == "a" else None,
            )
        )

    def _text_url(self, pos: int, end: int) -> str | None:
        """The link text up to the next </a>, when it reads as a URL."""
        closer = self._a_close.find(self.text, pos, end)
        if closer is None or closer.start() - pos > _MAX_LINK_TEXT:
            return None
        visible = _ANY_TAG.sub("", self.text[pos : closer.start()])
        visible = unescape_text(visible).strip()
        return visible if _URL_LIKE.fullmatch(visible) else None


def _url(raw: str | None) -> str:
    """An href value as the URL a browser follows: decoded, trimmed, tabs and newlines gone."""
    return _attribute_text(raw).strip(_ASCII_WHITESPACE).translate(_TAB_NEWLINE)


def _flag(attributes: dict[str, tuple[int, int, str | None]], name: str) -> str | None:
    value = attributes.get(name)
    return None if value is None else _attribute_text(value[2]).strip(_ASCII_WHITESPACE)
