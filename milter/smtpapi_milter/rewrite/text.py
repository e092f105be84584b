"""Find http(s) URLs in a text/plain part.

Momentum tracks the URLs of the top text/plain part too. Plain text has no markup that says
where a URL ends, so this module applies the conventions mail clients use when they make URLs
clickable: a URL ends at whitespace, at '<', '>' or '"', or at a control character; sentence
punctuation and an unbalanced closing bracket right after it belong to the prose, not to the
URL; ``<https://...>`` (RFC 3986, appendix C) delimits the URL exactly. Non-ASCII characters
(IRIs, emoji) are part of the URL, as clients treat them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from .urls import split_http_url

__all__ = ["find_text_urls", "find_text_urls_bounded"]

# The scheme must not continue a word ("xhttp://" is not an http URL). C1 controls count as
# controls; Python's \s covers NBSP and the other Unicode spaces clients break URLs at.
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[hH][tT][tT][pP][sS]?://[^\s<>\"\x00-\x1f\x7f-\x9f]*+")

_TRAILING_PUNCTUATION = ".,;:!?'"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_TRIMMABLE = frozenset(_TRAILING_PUNCTUATION) | frozenset(_CLOSERS)


def find_text_urls(text: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, url)`` for every http/https URL in ``text``, in order.

    ``text[start:end] == url``. Template syntax is not filtered here (the caller decides);
    candidates without a host (``http:///x``, ``http://``) are skipped. Never raises.
    """
    return find_text_urls_bounded(text, None)[0]


def find_text_urls_bounded(
    text: str, max_urls: int | None
) -> tuple[list[tuple[int, int, str]], int]:
    """The first ``max_urls`` of :func:`find_text_urls` (all for None), and how many
    URL-like candidates come after them (counted, not kept: memory stays bounded).

    Line by line (:func:`_find_text_urls_bounded_reference` is the whole text at once): a
    candidate ends at white space, so never runs past a line feed, and what a line holds is
    decided by that line alone (the look-behind at its start sees the line feed, or nothing,
    and refuses neither; the angle-bracket check at its ends sees the line feed, or
    nothing, and takes neither). Each line's candidates are remembered by its text: the
    copies of a mail merge share most lines of their text part, and only the lines that
    differ are searched again. The text parts of bench/mail_merge.py's 300 copies in order
    (4,742 characters, 28 URLs each), rounds 2-6 of 6: 40.5-44.9 -> 19.0-28.6 us a copy.
    """
    found: list[tuple[int, int, str]] = []
    beyond = 0
    end = len(text)
    separator = text.find("://", 4)
    while separator >= 0:
        start = text.rfind("\n", 0, separator) + 1
        stop = text.find("\n", separator)
        if stop < 0:
            stop = end
        line = text[start:stop]
        held = _line_candidates(line) if len(line) <= _REMEMBERED_LINE else _candidates_in(line)
        for first, last, url in held:
            if max_urls is not None and len(found) >= max_urls:
                beyond += 1
            elif url is not None:
                found.append((start + first, start + last, url))
        separator = text.find("://", stop + 1)
    return found, beyond


# Lines up to this long are remembered, the last thousand of them: a megabyte of line text
# at most (one-byte characters; two or four for text that holds wider ones).
_REMEMBERED_LINE = 1024


def _candidates_in(line: str) -> tuple[tuple[int, int, str | None], ...]:
    """Each candidate of ``line`` as :func:`_read` makes it."""
    return tuple(_read(line, candidate) for candidate in _candidates(line))


_line_candidates = functools.lru_cache(maxsize=1024)(_candidates_in)


def _read(text: str, candidate: re.Match[str]) -> tuple[int, int, str | None]:
    """A candidate's start, its URL's end (trailing punctuation left to the prose unless
    the URL is in angle brackets) and the URL, or None for one that is no URL (no host)."""
    start, end = candidate.span()
    if not _angle_bracketed(text, start, end):
        end = start + len(_trim_trailing(candidate.group()))
    url = text[start:end]
    kept = _has_host(url) if len(url) <= _REMEMBERED_URL else split_http_url(url) is not None
    return start, end, url if kept else None


def _find_text_urls_bounded_reference(
    text: str, max_urls: int | None
) -> tuple[list[tuple[int, int, str]], int]:
    """What :func:`find_text_urls_bounded` must give (tests/test_text_urls.py holds them
    equal): the whole text searched at once."""
    found: list[tuple[int, int, str]] = []
    candidates = _candidates(text)
    for candidate in candidates:
        if max_urls is not None and len(found) >= max_urls:
            return found, 1 + sum(1 for _ in candidates)
        start, end, url = _read(text, candidate)
        if url is not None:
            found.append((start, end, url))
    return found, 0


def _candidates(text: str) -> Iterator[re.Match[str]]:
    """The matches ``_CANDIDATE.finditer(text)`` yields (:func:`_candidates_reference`), found
    from each "://" instead.

    finditer tries the pattern at every position, look-behind first. Every match has its
    scheme's "://" 4 or 5 characters after its start, so the pattern is tried only there
    (``str.find`` passes over the rest in C), in the order finditer would try them: two
    separators are at least 3 characters apart, so the starts they give are in order. A
    match is tried only at or after the end of the last one, as finditer resumes there (the
    pattern never matches empty), and its look-behind still sees the character before
    (``match`` at an offset does). Timed side by side (3 alternating rounds): the mail-merge
    bench's text part (4,742 characters, 28 URLs) 36 -> 25 us a copy; the corpus's 122 text
    parts 0.37 -> 0.09 ms in all."""
    match, find = _CANDIDATE.match, text.find
    resume = 0  # where finditer would go on: the end of the last match
    separator = find("://", 4)
    while separator >= 0:
        for start in (separator - 5, separator - 4):
            if start >= resume and (found := match(text, start)) is not None:
                yield found
                resume = found.end()
                break
        separator = find("://", max(separator + 1, resume + 4))


def _candidates_reference(text: str) -> Iterator[re.Match[str]]:
    """What :func:`_candidates` must give (tests/test_text_urls.py holds them equal)."""
    return _CANDIDATE.finditer(text)


# A campaign's text part repeats its URLs in every copy: the verdict on each (up to this
# long, for the last few thousand) is kept, as urls.is_trackable_url keeps its own.
_REMEMBERED_URL = 2048
_has_host = functools.lru_cache(maxsize=4096)(lambda url: split_http_url(url) is not None)


def _angle_bracketed(text: str, start: int, end: int) -> bool:
    # Inside "<...>" the brackets are the delimiters, so trailing punctuation is the URL's.
    return start > 0 and text[start - 1] == "<" and text.startswith(">", end)


def _trim_trailing(url: str) -> str:
    """Drop sentence punctuation and unbalanced closing brackets from the end of ``url``."""
    if url[-1:] not in _TRIMMABLE:
        return url
    # Counts are kept up to date by hand: recounting per dropped character would make a URL
    # ending in thousands of ')' quadratic.
    balance = {closer: url.count(closer) - url.count(opener) for closer, opener in _CLOSERS.items()}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _TRAILING_PUNCTUATION:
            end -= 1
        elif last in balance and balance[last] > 0:
            # Balanced pairs stay: https://en.wikipedia.org/wiki/Genesis_(band)
            balance[last] -= 1
            end -= 1
        else:
            break
    return url[:end]
