"""Tests of the text/plain URL finder (rewrite/text.py) and the URL rules (rewrite/urls.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.rewrite import text as text_module
from smtpapi_milter.rewrite.text import find_text_urls, find_text_urls_bounded
from smtpapi_milter.rewrite.urls import (
    MAX_URL_BYTES,
    has_template_syntax,
    is_trackable_url,
    split_http_url,
)


def found(text: str) -> list[str]:
    return [url for _, _, url in find_text_urls(text)]


# --- find_text_urls --------------------------------------------------------------------------


def test_offsets_are_exact() -> None:
    text = "Hi,\r\nsee https://x.example/a?b=1&c=2 and HTTP://Y.example.\r\n"
    result = find_text_urls(text)
    assert [url for _, _, url in result] == ["https://x.example/a?b=1&c=2", "HTTP://Y.example"]
    for start, end, url in result:
        assert text[start:end] == url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Go to http://x.example/path.", ["http://x.example/path"]),
        ("http://x.example/a, http://y.example/b; http://z.example/c:", None),
        ("Really? http://x.example/?!", ["http://x.example/"]),
        ("'http://x.example/q'", ["http://x.example/q"]),
        ("(see http://x.example/a)", ["http://x.example/a"]),
        ("(see http://x.example/a).", ["http://x.example/a"]),
        ("https://en.wikipedia.org/wiki/Genesis_(band)", None),
        (
            "(https://en.wikipedia.org/wiki/Genesis_(band))",
            ["https://en.wikipedia.org/wiki/Genesis_(band)"],
        ),
        ("[http://x.example/list[1]]", ["http://x.example/list[1]"]),
        ("{http://x.example/}", ["http://x.example/"]),
        ("<https://x.example/z>", ["https://x.example/z"]),
        ("<https://x.example/end.>", ["https://x.example/end."]),
        ('href "http://x.example/q"x', ["http://x.example/q"]),
        ("a\thttp://x.example/tab\tb", ["http://x.example/tab"]),
        ("nbsp http://x.example/a\u00a0b", ["http://x.example/a"]),
        ("ctl http://x.example/a\x07b", ["http://x.example/a"]),
        ("https://x.example/a@b!c,d'e(f)[g]", None),
        ("https://bücher.example/straße?q=日本語 next", ["https://bücher.example/straße?q=日本語"]),
        ("party https://x.example/🎉😀 now", ["https://x.example/🎉😀"]),
        ("https://user:pw@x.example:8443/p#frag", None),
        ("http://{{host}}/x", None),
    ],
)
def test_url_boundaries(text: str, expected: list[str] | None) -> None:
    if expected is None:
        expected = [part.rstrip(",;:") for part in text.split()]
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://",
        "http:///path",
        "https://?q",
        "http://:80/",
        "http://user@/x",
        "ftp://x.example/",
        "mailto:x@example.com",
        "xhttp://x.example/",
        "http:/x.example/",
        "www.example.com",
    ],
)
def test_not_urls(text: str) -> None:
    assert found(text) == []


def test_many_closing_brackets_are_linear() -> None:
    url = "http://x.example/" + ")" * 200_000
    assert found(url) == ["http://x.example/"]


# --- is_trackable_url / has_template_syntax --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://x.example/",
        "HTTPS://X.example/path?q=1#f",
        "https://x.example",
        "https://user@x.example/",
        "http://[2001:db8::1]:8080/",
        "https://bücher.example/😀",
        "https://x.example/" + "a" * (MAX_URL_BYTES - len("https://x.example/")),
        "https://x.example/" + "é" * 1039,  # over 1024 characters, yet within 4096 bytes
        "https://x.example/" + "😀" * 1019,  # 4094 bytes
        "https://track.example.com.evil.example/",
        "https://track.example.com:8443/",
    ],
)
def test_trackable(url: str) -> None:
    assert is_trackable_url(url, "track.example.com")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mailto:x@example.com",
        "tel:+15551234",
        "#top",
        "/relative/path",
        "//x.example/protocol-relative",
        "javascript:alert(1)",
        "http:/x.example/",
        "http:\\\\x.example\\",
        "http://",
        "http:///path",
        "http://x.example:port/",
        "https://x.example/" + "a" * (MAX_URL_BYTES - len("https://x.example/") + 1),
        "https://x.example/" + "é" * 2100,
        "https://x.example/" + "😀" * 1020,  # 4098 bytes in 1038 characters
        "https://track.example.com/c/abc",
        "https://TRACK.Example.COM/c/abc",
        "http://track.example.com:80/c",
        "https://track.example.com:443/c",
        "https://track.example.com./c",
        "https://someone@track.example.com/c",
        "http://x.example/?u={{user}}",
        "http://x.example/%%id%%",
        "http://x.example/*|EMAIL|*",
        "http://x.example/<%= id %>",
        "http://x.example/[% id %]",
        "http://x.example/${id}",
        "http://x.example/{% if x %}",
    ],
)
def test_not_trackable(url: str) -> None:
    assert not is_trackable_url(url, "track.example.com")


def test_tracking_domain_with_port() -> None:
    assert not is_trackable_url("http://t.example:8080/x", "t.example:8080")
    assert is_trackable_url("http://t.example/x", "t.example:8080")
    assert not is_trackable_url("https://t.example/x", "T.example:443")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://x/{{a}}", True),
        ("http://x/}}", True),
        ("http://x/%%a", True),
        ("http://x/*|a|*", True),
        ("http://x/${a}", True),
        ("http://x/%20{a}", False),
        ("http://x/a%7B%7B", False),
        ("http://x/?a=1&b=2", False),
    ],
)
def test_has_template_syntax(url: str, expected: bool) -> None:
    assert has_template_syntax(url) is expected


def test_split_http_url() -> None:
    assert split_http_url("HTTPS://U:P@Host.Example:8443/x") == ("https", "host.example", "8443")
    assert split_http_url("http://[::1]/") == ("http", "[::1]", "")
    assert split_http_url("http://[::1/") is None
    assert split_http_url("http://x.example:²/") is None


# --- properties ------------------------------------------------------------------------------

FRAGMENTS = [
    "http://",
    "https://",
    "HTTP://",
    "x.example",
    "/",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ".",
    ",",
    "'",
    '"',
    "<",
    ">",
    " ",
    "\n",
    "\0",
    "\udc80",
    "😀",
    "é",
    "?",
    "#",
    "@",
]
SOUP = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=40).map(
    "".join
)


@settings(max_examples=400)
@given(SOUP)
def test_find_text_urls_invariants(text: str) -> None:
    previous_end = 0
    for start, end, url in find_text_urls(text):
        assert previous_end <= start < end <= len(text)
        assert text[start:end] == url
        assert url[:4].lower() == "http"
        assert split_http_url(url) is not None
        assert not any(c.isspace() or c in '<>"' for c in url)
        previous_end = end


# Text dense in what the candidate search turns on: separators, schemes cut short or run
# into words, a scheme's letters in either case, characters a URL stops at.
SEPARATED = st.lists(
    st.sampled_from(
        ["://", ":/", "http", "https", "hTtPs", "HTTP", "s", "x", "1", ":", "/", " ", "<", ">"]
        + ["\n", "\u00a0", "\x85", "é"]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=600)
@given(st.one_of(SOUP, SEPARATED))
def test_candidates_found_from_separators_are_finditers(text: str) -> None:
    spans = [match.span() for match in text_module._candidates(text)]
    assert spans == [match.span() for match in text_module._candidates_reference(text)]


@pytest.mark.parametrize(
    "text",
    [
        "http://a",  # the first separator at 4: a match at 0
        "https://a",
        "xhttp://a https://b",  # the first refused by its look-behind, the second found
        "http://a/http://b https://c",  # a separator inside a match is not a start
        "http://https://a",
        "https://a:/http://b",
        "://http://a",
        "",
        "ttp://a",
    ],
)
def test_candidates_edge_cases(text: str) -> None:
    spans = [match.span() for match in text_module._candidates(text)]
    assert spans == [match.span() for match in text_module._candidates_reference(text)]


@given(st.text(alphabet=st.characters(exclude_categories=())), st.text())
def test_never_raise_on_any_text(text: str, domain: str) -> None:
    find_text_urls(text)
    is_trackable_url(text, domain)
    has_template_syntax(text)


HOST = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True)
PATH = st.lists(st.sampled_from(list("abc019-_~=&%+@!*$/:") + ["é", "😀", "(x)"]), max_size=30)


@given(
    st.sampled_from(["http", "https", "HTTPS"]),
    HOST,
    PATH.map("".join),
    st.sampled_from([" ", "\n", "\u00a0", ". ", ", ", "! ", ") ", "?\n"]),
)
def test_realistic_url_in_prose(scheme: str, host: str, path: str, after: str) -> None:
    # The path ends in a letter, so whatever follows is prose, not URL.
    url = f"{scheme}://{host}/{path}z"
    assert found(f"Dear customer, visit {url}{after}Thanks") == [url]


def test_bounded_keeps_the_first_urls_and_counts_the_rest():
    text = " ".join(f"https://x.example/{i}" for i in range(10))
    found, beyond = find_text_urls_bounded(text, 4)
    assert [url for _, _, url in found] == [f"https://x.example/{i}" for i in range(4)]
    assert beyond == 6
    assert find_text_urls_bounded(text, None) == (find_text_urls(text), 0)


# Lines of SOUP and SEPARATED, some repeated (a merge copy's text part repeats its lines),
# some past the length whose candidates are remembered.
LINES = st.lists(
    st.one_of(SOUP, SEPARATED, st.sampled_from(["https://a.example/x" * 60, "http://b.example"])),
    max_size=8,
).map(lambda lines: "\n".join(lines + lines[:2]))


@settings(max_examples=600)
@given(LINES, st.one_of(st.none(), st.integers(0, 4)))
def test_line_by_line_search_is_the_whole_text_search(text: str, max_urls: int | None) -> None:
    expected = text_module._find_text_urls_bounded_reference(text, max_urls)
    assert find_text_urls_bounded(text, max_urls) == expected
    assert find_text_urls_bounded(text, max_urls) == expected  # its lines remembered now


def test_a_line_is_searched_once_and_remembered():
    text_module._line_candidates.cache_clear()
    line = "see https://a.example/offer?id=1, or <http://b.example/x.>"
    text = f"Hello Ann\n{line}\nBye\n"
    first = find_text_urls_bounded(text, None)
    again = find_text_urls_bounded("Hello Bob\n" + text.split("\n", 1)[1], None)
    assert [url for *_, url in first[0]] == ["https://a.example/offer?id=1", "http://b.example/x."]
    assert again == first  # the same offsets: "Hello Bob" is as long as "Hello Ann"
    info = text_module._line_candidates.cache_info()
    assert (info.hits, info.misses) == (1, 1)
