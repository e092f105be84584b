"""Our regular expressions read alike on every Python 3.11 a mail server may run.

CPython before 3.11.5 matched a possessive repeat of a group wrongly: "(?:ab?c)*+" matched
"a" (gh-106052), and a lookahead inside one let the match run on past it (gh-100061). Debian
12's Python is 3.11.2, and `make install` runs the milter on it: there the HTML scan ran
from a head's ``<!--[if mso]>`` (hidden Outlook content, in every MJML template) to the end
of the text, and found 40 of the corpus's 667 links. So a repeated group is made possessive
as an atomic group, ``(?>(?:...)*)``, which every 3.11 reads right, and possessive repeats
stay on single characters (``[^<]*+``), which never had the bug.

This test holds on any interpreter (it reads the patterns, not their matches); the corpus
tests catch the rest when run on an old one (`make test` makes its .venv from /usr/bin/python3).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from re import _constants as sre  # the parser's own names: private, but only for this test
from re import _parser as sre_parse
from typing import Any

import pytest

import smtpapi_milter
from smtpapi_milter.rewrite.html import scan_html
from smtpapi_milter.unambiguous_url import is_unambiguous

ONE_CHARACTER = {sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY, sre.CATEGORY}


def possessive_groups(items: Any) -> list[str]:
    """The possessive repeats in a parsed pattern of anything but one character."""
    found: list[str] = []
    for op, av in items:
        subpatterns: list[Any] = []
        if op is sre.POSSESSIVE_REPEAT:
            sub = av[2]
            if not (len(sub.data) == 1 and sub.data[0][0] in ONE_CHARACTER):
                found.append(str(sub)[:120])
            subpatterns = [sub]
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            subpatterns = [av[2]]
        elif op is sre.SUBPATTERN:
            subpatterns = [av[-1]]
        elif op is sre.BRANCH:
            subpatterns = list(av[1])
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            subpatterns = [av[1]]
        elif op is sre.ATOMIC_GROUP:
            subpatterns = [av]
        elif op is sre.GROUPREF_EXISTS:
            subpatterns = [p for p in av[1:] if p is not None]
        for sub in subpatterns:
            found += possessive_groups(sub.data)
    return found


def our_patterns() -> dict[str, re.Pattern[str] | re.Pattern[bytes]]:
    """Every compiled pattern a module of the package holds: module-level, in a dict, list or
    tuple there, or on a class defined there."""
    patterns: dict[str, Any] = {}

    def look(where: str, value: Any) -> None:
        if isinstance(value, re.Pattern):
            patterns[where] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                look(f"{where}[{key!r}]", item)
        elif isinstance(value, list | tuple | frozenset | set):
            for index, item in enumerate(value):
                look(f"{where}[{index}]", item)

    for info in pkgutil.walk_packages(smtpapi_milter.__path__, "smtpapi_milter."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            look(f"{info.name}.{name}", value)
            if isinstance(value, type) and value.__module__ == info.name:
                for attribute, item in vars(value).items():
                    look(f"{info.name}.{name}.{attribute}", item)
    return patterns


def test_no_pattern_repeats_a_group_possessively():
    patterns = our_patterns()
    assert len(patterns) > 50, "the walk found too few patterns to mean anything"
    offending = {
        where: found
        for where, pattern in patterns.items()
        if (found := possessive_groups(sre_parse.parse(pattern.pattern, pattern.flags).data))
    }
    assert offending == {}


def test_the_checker_sees_a_possessive_group():
    assert possessive_groups(sre_parse.parse(r"(?:ab?c)*+").data)
    assert possessive_groups(sre_parse.parse(r"x(?:(?!C).)++").data)
    assert not possessive_groups(sre_parse.parse(r"[^<]*+(?>(?:ab?c)*)").data)


@pytest.mark.parametrize(
    "head",
    [
        "<!--[if mso]>\n<xml><o:AllowPNG/></xml>\n<![endif]-->",
        '<!--[if lte mso 11]>\n<style type="text/css">.x { width:100% }</style>\n<![endif]-->',
        "<!--[if !mso]><!--><meta charset=utf-8><!--<![endif]-->",
    ],
)
def test_a_link_after_an_outlook_conditional_comment_is_found(head):
    # Every MJML template's head holds the first two: on Debian 12's Python 3.11.2 the skip
    # ran from them to the end of the text, and no link after them was found.
    html = f'<html><head>{head}\n</head><body><a href="https://example.com/a">a</a></body></html>'
    assert [link.url for link in scan_html(html, None).links] == ["https://example.com/a"]


def test_a_host_with_non_ascii_labels_is_read():
    assert is_unambiguous("https://bücher.example/x")
    assert is_unambiguous("https://www.bücher.example.org/x")
