"""Searching a whole new body (or one of its parts) for a marker.

Each new body is searched end to end a few times: for the inline-PGP marker, the MIME
boundary, the curly-brace template marker. CPython 3.11's ``find`` runs at 2-5 GB/s on them
(the PGP marker over the mail-merge bench's 94 KB part: 19.7 us); glibc's memmem, which
_native/textrun.c's ``find`` calls for bytes and str alike, 5.7 us (the template marker over
that part's text, whose widest characters take 2 bytes: 16.2 -> 10.8 us).
"""

from __future__ import annotations

from typing import Any, TypeVar

from .._native import load

_Text = TypeVar("_Text", str, bytes)


def find_reference(haystack: _Text, needle: _Text, start: int, end: int) -> int:
    """``haystack.find(needle, start, end)``: what the compiled ``find`` is tested against."""
    return haystack.find(needle, start, end)  # type: ignore[arg-type]


_textrun: Any = load("textrun")
find = find_reference if _textrun is None else _textrun.find
