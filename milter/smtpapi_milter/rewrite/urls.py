"""Which URLs click tracking may rewrite.

The HTML scanner and the text/plain URL finder report every link they see; this module holds
the one rule that decides whether a link becomes a tracked link, so that HTML and text parts
are treated alike. The rule is deliberately conservative: anything we cannot read with
certainty (other schemes, no host, template placeholders a later stage will expand, very long
URLs) is left exactly as the sender wrote it.
"""

from __future__ import annotations

import functools
import re

from ..unambiguous_url import is_unambiguous

MAX_URL_BYTES = 4096
_MAX_BYTES_PER_CHAR = 4  # UTF-8, lone surrogates (3) included

# Placeholders of the template languages senders use (Handlebars/Jinja/Liquid, Momentum's
# %%...%%, Mailchimp's *|...|*, ERB/ASP, Template Toolkit, JS/Velocity). A URL holding one is
# expanded later by someone else; rewriting it would freeze the placeholder into our token.
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}|%%|\*\||\|\*|<%|%>|\[%|%\]|\$\{")

# Outlook's conditional-comment syntax: Outlook ends or opens a conditional there whatever
# the HTML around it says, so rewriting a value holding it would unbalance Outlook's view.
_OUTLOOK_SYNTAX = re.compile(r"<!(?:--)?\[(?:if|endif)\b", re.IGNORECASE)

# Scheme and authority. Browsers end the authority at '\' too for http(s); stopping there
# keeps us from reading a host out of something a browser would not. ASCII case-folding
# only: Unicode's would take "httpſ" (long s) for "https".
_HTTP_AUTHORITY = re.compile(r"(?ai:(https?)://)([^/?#\\]*+)")

_DEFAULT_PORTS = {"http": "80", "https": "443"}

# WHATWG URL "forbidden host code points" (and DEL): a browser refuses such a host, so the
# link leads nowhere and tracking it would only turn it into a redirect to nowhere.
_FORBIDDEN_HOST = re.compile(r"[\x00-\x20#/:<>?@\[\\\]^|\x7f]")


def has_template_syntax(url: str) -> bool:
    """True when ``url`` contains a placeholder of a common template language."""
    return _TEMPLATE_SYNTAX.search(url) is not None


def split_http_url(url: str) -> tuple[str, str, str] | None:
    """Return ``(scheme, host, port)`` of an absolute http(s) URL, lower-cased, or None.

    None means: not http/https, no ``//``, an empty host, a host a browser refuses (a
    forbidden code point such as ``[`` or a space), or a port that is not a number.
    ``port`` is ``""`` when the URL names none. Userinfo is dropped; IPv6 hosts keep brackets.
    """
    match = _HTTP_AUTHORITY.match(url)
    if match is None:
        return None
    scheme, authority = match.groups()
    scheme = scheme.lower()
    hostport = authority.rpartition("@")[2]
    host, port = _split_host_port(hostport)
    if not host or not _is_port(port):
        return None
    if not host.startswith("[") and _FORBIDDEN_HOST.search(host):
        return None
    return scheme, host.lower(), port


def _is_port(port: str) -> bool:
    # str.isdigit alone accepts '²' and other non-ASCII digits.
    return port == "" or (port.isascii() and port.isdigit())


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        bracket = hostport.find("]")
        if bracket < 0:
            return "", ""
        host, tail = hostport[: bracket + 1], hostport[bracket + 1 :]
        if tail and not tail.startswith(":"):
            return "", ""
        return host, tail[1:]
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return hostport, ""
    return host, port


def _normal_netloc(scheme: str, host: str, port: str) -> str:
    # 'example.com.' is the same DNS name as 'example.com'; a default port is no port.
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    if port == "" or port.lstrip("0") == _DEFAULT_PORTS[scheme]:
        return host
    return f"{host}:{port.lstrip('0') or '0'}"


def _is_tracking_domain(scheme: str, host: str, port: str, tracking_domain: str) -> bool:
    netloc = _tracking_netloc(scheme, tracking_domain)
    return netloc is not None and _normal_netloc(scheme, host, port) == netloc


# A handful of settings at most; every link of every message asks again.
@functools.lru_cache(maxsize=64)
def _tracking_netloc(scheme: str, tracking_domain: str) -> str | None:
    td_host, td_port = _split_host_port(tracking_domain.strip().lower())
    if not td_host or not _is_port(td_port):
        return None
    return _normal_netloc(scheme, td_host, td_port)


def is_trackable_url(url: str, tracking_domain: str) -> bool:
    """:func:`_is_trackable_url`, remembered for the URLs every copy of a campaign repeats."""
    if len(url) > _REMEMBERED_URL:
        return _is_trackable_url(url, tracking_domain)
    return _remembered_trackable(url, tracking_domain)


# A campaign's links are the same in each of its messages (or differ in a query string):
# the verdict on URLs up to this long is kept, for the last few thousand of them.
_REMEMBERED_URL = 2048
_remembered_trackable = functools.lru_cache(maxsize=4096)(lambda u, d: _is_trackable_url(u, d))


def _is_trackable_url(url: str, tracking_domain: str) -> bool:
    """Tell whether click tracking may rewrite ``url``.

    ``url`` is already entity-decoded and stripped of surrounding whitespace. It is trackable
    when it is an absolute http/https URL with a host, at most ``MAX_URL_BYTES`` bytes in
    UTF-8, free of template syntax and of Outlook's conditional-comment syntax, read alike
    by browsers and RFC 3986 (:mod:`smtpapi_milter.unambiguous_url`), and not already
    pointing at ``tracking_domain``
    (host[:port], case-insensitive, default ports ignored, userinfo ignored).
    """
    parts = split_http_url(url)
    if parts is None:
        return False
    too_long = len(url) * _MAX_BYTES_PER_CHAR > MAX_URL_BYTES  # else no need to encode it
    if too_long and len(url.encode("utf-8", "surrogatepass")) > MAX_URL_BYTES:
        return False
    if has_template_syntax(url) or _OUTLOOK_SYNTAX.search(url):
        return False
    # A host a browser reads differently from us (a backslash, a second '@', a tab...) would
    # make our redirect go somewhere the link did not say.
    if not is_unambiguous(url):
        return False
    return not _is_tracking_domain(*parts, tracking_domain)
