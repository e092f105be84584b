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
    # Exact if it encodes back to the same text: a >64-bit integer read as a float, or
    # anything else read approximately, would come back spelled otherwise. (Payloads the
    # stdlib wrote with \\u escapes, from before orjson, take the slower way too.)
    if orjson.dumps(value) == text.encode("utf-8"):
        return value
    return json.loads(text)
