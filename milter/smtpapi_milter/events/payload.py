"""The ``events.payload`` column's JSON: orjson where it gives the same values, else the stdlib.

The log follower stores tens of thousands of events a second and reads back as many
injections (bench/maillog_bench.py). Measured on one of its injections: encoding takes 2.5 µs
instead of the stdlib's 5.6, decoding (with the check below) about 2 µs instead of 4.

orjson refuses what the stdlib takes: lone surrogates (a tracking token's text may hold
them) and integers beyond 64 bits (a sender's metadata may); it writes an infinite float
(``1e999`` in a sender's JSON) as ``null``, and reads an integer beyond 64 bits back as a
float. Those payloads go through the stdlib, so every event round-trips as it did before.

orjson writes non-ASCII characters as UTF-8 where the stdlib wrote ``\\uXXXX`` escapes: the
stored text differs, the decoded event does not, and nothing reads the payload but a JSON
decoder.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .._native import load

# The C scan (_native/jsonnum.c) answers as _plain_numbers_reference below, which stays
# the reference it is tested against; SMTPAPI_PURE_PYTHON=1 goes without the scan.
_jsonnum: Any = load("jsonnum")

_stdlib_encode = json.JSONEncoder(separators=(",", ":")).encode


def encode(event: dict[str, Any]) -> str:
    """Compact JSON text (``,`` and ``:`` without spaces) of ``event``."""
    try:
        text = orjson.dumps(event)
    except TypeError:  # orjson.JSONEncodeError: surrogates, huge integers, odd keys
        return _stdlib_encode(event)
    if b"null" in text:  # maybe an infinity orjson wrote as null (the stdlib keeps it)
        return _stdlib_encode(event)
    return text.decode("utf-8")


def decode(text: str) -> Any:
    """The value ``text`` (an :func:`encode` result, or an older payload) holds."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # escaped lone surrogates, Infinity, NaN
        return json.loads(text)
    # Exact when its numbers are integers orjson reads as the stdlib does (everything else
    # it reads alike, or refuses): the common case, a scan in C. Otherwise exact if it
    # encodes back to the same text: a >64-bit integer read as a float, or anything else
    # read approximately, would come back spelled otherwise.
    if _plain_numbers(text) or orjson.dumps(value) == text.encode("utf-8"):
        return value
    return json.loads(text)


def _plain_numbers_reference(text: str) -> bool:
    """Whether every number in JSON ``text``, outside its strings, is an integer of at most
    18 digits (within 64 bits: orjson reads it as the stdlib does)."""
    in_string, i = False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1  # the character escaped is not the string's end
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif "0" <= char <= "9":
            start = i
            while i < len(text) and "0" <= text[i] <= "9":
                i += 1
            if i - start > PLAIN_DIGITS or text[i : i + 1] in (".", "e", "E"):
                return False
            continue
        i += 1
    return True


def _not_scanned(text: str) -> bool:
    """Without the C scan the encode-and-compare check serves alone (the reference, a step
    per character in Python, would cost more than that check)."""
    return False


PLAIN_DIGITS = 18
_plain_numbers = _not_scanned if _jsonnum is None else _jsonnum.plain_numbers
