"""URLs whose host every parser reads alike: the only ones we track or redirect to.

A browser reads a link by the WHATWG URL standard; Python, mail filters and most servers by
RFC 3986. The two disagree on purpose-built links: in ``https://good.example\\@evil.example/``
a browser ends the host at the backslash (``good.example``), RFC 3986 reads ``good.example\\``
as user info and ``evil.example`` as the host, and our redirect (which percent-encodes the
backslash) took the reader to evil.example. Tabs and newlines (browsers drop them), other
control characters, a second ``@``, ``%`` escapes in the host (browsers decode them), IPv4
in hex or octal (``0x7f.1`` is 127.0.0.1 to a browser) and Unicode that IDNA folds into
dots or nothing (``。``, a soft hyphen) are the same kind of trap.

So a URL qualifies only when its authority is plain RFC 3986 that WHATWG reads the same way:
user info (at most one ``@``) and host of RFC 3986 characters without escapes, the host a
name whose last label does not start with a digit, a dotted-decimal IPv4 address or an IPv6
literal, a decimal port up to 65535, and no control character or undecodable byte anywhere.
A host may also hold Unicode letters and digits in NFKC form (``bücher.example``): IDNA then
only lower-cases them and spells them in punycode, so the labels a browser sees are the ones
written. A label holding right-to-left characters must keep the bidi rule (RFC 5893), which
browsers enforce: ``www.example\u05dcom`` (a Hebrew letter among Latin ones) is a host no
browser visits, and a link to it is left as it is (fuzz finding).

The milter leaves any other URL untracked, and the tracker refuses to redirect to one (a
token minted before this rule); both ask :func:`is_unambiguous`: for the usual ASCII link two
C-coded ``str`` tests and one precompiled match of the scheme and authority.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

import idna

_SUB_DELIMS = "!$&'()*+,;="
_USERINFO = rf"[A-Za-z0-9._~:{re.escape(_SUB_DELIMS)}-]*+@"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_IPV6 = r"(?P<ipv6>\[[0-9A-Fa-f:.]++\])"


def _pattern(label_char: str, first_char: str) -> re.Pattern[str]:
    # A last label that does not start with a digit is never read as a number by WHATWG's
    # IPv4 rules (all-digit labels, 0x...); dotted-decimal IPv4 is matched on its own.
    # (?>...*): possessive without a possessive repeat of a group (rewrite/html.py says why).
    name = rf"(?:(?>{label_char}*)\.)*{first_char}(?>{label_char}*)\.?"
    # Scheme and authority only: the rest of the URL is checked for control characters apart.
    return re.compile(
        rf"(?ai:https?)://(?:{_USERINFO})?(?P<host>{_IPV4}|{_IPV6}|{name})"
        r"(?::(?P<port>[0-9]*+))?(?=[/?#]|\Z)"
    )


_ASCII_LABEL = rf"[A-Za-z0-9_~{re.escape(_SUB_DELIMS)}-]"
_ASCII_FIRST = rf"[A-Za-z_~{re.escape(_SUB_DELIMS)}-]"  # a label character but a digit
_ASCII = _pattern(_ASCII_LABEL, _ASCII_FIRST)
# Only tried when the ASCII form does not match (rare): hosts with non-ASCII characters.
_UNICODE = _pattern(rf"(?:{_ASCII_LABEL}|[^\x00-\x7f])", rf"(?:{_ASCII_FIRST}|[^\x00-\x7f])")
# Browsers drop tabs and newlines anywhere and percent-encode other controls (C1 included).
# Lone surrogates are bytes the part's charset does not decode (surrogateescape): a reader
# reads them by its own guess of the charset (UTF-8 "\xc2\x85" in a us-ascii part is U+0085
# to one, "\u00c2\u2026" to another), and no redirect can send the URL each would follow
# (fuzz finding: such a link was tracked and redirected to "%ED%B3%82%ED%B2%85").
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def is_unambiguous(url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL whose host a browser (WHATWG) and an
    RFC 3986 parser read alike (see the module doc); False for anything else."""
    # str methods in C first: printable ASCII holds no control character.
    if not (url.isascii() and url.isprintable()) and _CONTROL.search(url):
        return False
    match = _ASCII.match(url)
    if match is None:
        match = _UNICODE.match(url)
        if match is None or not _plain_unicode(match.group("host")):
            return False
    ipv6, port = match.group("ipv6", "port")
    if port and int(port) > 65535:  # a browser refuses the URL: it leads nowhere
        return False
    return ipv6 is None or _is_ipv6(ipv6[1:-1])


# IDNA 2003 and 2008 spell these differently (ß: "ss" or itself): resolvers and browsers
# of different ages would look up different names. Compared lower-cased: "aΣ" is "aς" to
# RFC 3986 parsers (Python lower-cases a final sigma so) and "aσ" to IDNA.
_DEVIATIONS = frozenset("ßẞς")
_RIGHT_TO_LEFT = frozenset(("R", "AL", "AN"))


def _plain_unicode(host: str) -> bool:
    # NFKC-stable letters and digits: IDNA's mapping can neither add a dot nor drop a
    # character (fullwidth forms, ideographic full stops, soft hyphens and joiners fail).
    if not (
        unicodedata.is_normalized("NFKC", host)
        and all(c.isascii() or c.isalnum() for c in host)
        and _DEVIATIONS.isdisjoint(host.lower())
    ):
        return False
    return all(_label_is_idna(label) for label in host.split("."))


def _label_is_idna(label: str) -> bool:
    if label.isascii():
        return True
    if label[:4].lower() == "xn--":  # punycode's prefix on Unicode: IDNA refuses the label
        return False
    # The bidi rule as browsers apply it (UTS 46, which WHATWG URL uses): to each label that
    # holds a right-to-left character, whatever its neighbours (``1x.\u05e2\u05d1`` passes).
    if not any(unicodedata.bidirectional(c) in _RIGHT_TO_LEFT for c in label):
        return True
    try:
        return idna.check_bidi(label)
    except idna.IDNAError:
        return False


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
