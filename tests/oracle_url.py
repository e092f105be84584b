"""Does a browser read a URL's host as RFC 3986 does? An oracle independent of ours.

The browser's side is ada (``ada-url`` on PyPI, the WHATWG URL parser Node.js uses, checked
against the standard's own test suite), so the tests do not trust a WHATWG reading of our
own making; the RFC 3986 side is the standard library's ``urllib.parse``. A host matches
when the two name the same thing literally: urllib keeps ``%`` escapes and hex IPv4 as
written (a DNS name), ada decodes and converts them, and that difference counts.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import ada_url

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def whatwg_host(url: str) -> str | None:
    """The host a browser would connect to for ``url``, or None if it refuses the URL."""
    try:
        return ada_url.URL(url).hostname
    except ValueError:
        return None


def rfc3986_host(url: str) -> str | None:
    """The host RFC 3986 reads (urllib), IDNA-encoded, or None."""
    # urllib silently drops tabs and newlines (as browsers do): RFC 3986 forbids them.
    if _CONTROLS.search(url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return None
    # RFC 3986 user info has no '@'; parsers that split at the first '@' exist.
    if parts.netloc.count("@") > 1 or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        return f"[{host}]"
    return idna_host(host)


def idna_host(host: str) -> str | None:
    """``host`` in IDNA (punycode) form, as UTS 46 (which browsers use) spells it, or None.

    Only the spelling: no percent-decoding, no number forms, so a host that a browser
    reads differently from its literal text does not come out equal."""
    if host.isascii():
        return host.lower()
    if any("\udc80" <= c <= "\udcff" for c in host):
        return None  # bytes that were not UTF-8 (surrogate-escaped): no browser reads a host
    ascii_host = ada_url.idna_to_ascii(host)
    return ascii_host.decode("ascii") if ascii_host else None


def browser_reads_same_host(url: str) -> bool:
    """True when WHATWG and RFC 3986 parsing agree on ``url``'s host (and both accept it)."""
    browser, rfc = whatwg_host(url), rfc3986_host(url)
    if browser is None or rfc is None:
        return False
    if rfc.startswith("["):
        try:
            return ipaddress.IPv6Address(rfc[1:-1]) == ipaddress.IPv6Address(browser[1:-1])
        except ValueError:
            return False
    return browser == rfc
