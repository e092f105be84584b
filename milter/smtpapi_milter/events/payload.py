"""The ``events.payload`` column's JSON: orjson where it gives the same values, else the stdlib.

The log follower stores tens of thousands of events a second and reads back as many
injections (bench/maillog_bench.py). Measured on one of its injections: encoding takes 2.5 µs
instead of the stdlib's 5.6, decoding about 3.5 µs instead of 4 (orjson's own 1 µs, the rest
the search for long integers below). It refuses what the stdlib takes: lone
surrogates (a tracking token's text may hold them) and integers beyond 64 bits (a sender's
metadata may), it writes an infinite float (``1e999`` in a sender's JSON) as ``null``, and
it reads an integer beyond 64 bits back as a float instead of failing.
Those payloads go through the stdlib, so every event round-trips as it did before.

orjson writes non-ASCII characters as UTF-8 where the stdlib wrote ``\\uXXXX`` escapes: the
stored text differs, the decoded event does not, and nothing reads the payload but a JSON
decoder.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_stdlib_encode = json.JSONEncoder(separators=(",", ":")).encode
# A number of 19 or more digits where a JSON value starts: possibly beyond 64 bits. Its
# look-alikes inside strings only send a payload the slower, exact way.
_LONG_NUMBER = re.compile(r"[:,\[]\s*-?\d{19}")


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
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # escaped lone surrogates, NaN from older writers
            pass
    return json.loads(text)
