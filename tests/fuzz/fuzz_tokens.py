"""Fuzz the link-token decoder: anything we did not issue raises InvalidToken, nothing else.

A token that does decode must be a spelling of one we issued (AES-SIV is deterministic, so
re-encoding gives the canonical spelling back): percent-encoding and '=' padding are the
only freedom the decoder allows. The codec's C opener (when built) must say exactly what the
pure-Python reference says.
"""

from __future__ import annotations

import sys
from urllib.parse import unquote

import atheris

with atheris.instrument_imports(include=["smtpapi_milter"]):
    from smtpapi_milter import tokens
    from smtpapi_milter.tokens import InvalidToken, TokenCodec

from .seeds import FUZZ_KEY

CODEC = TokenCodec([FUZZ_KEY, ("old", bytes(range(32, 64)))])


def reference(token: str) -> tuple[str, object]:
    try:
        return "data", repr(tokens._decode(CODEC._ciphers, token))
    except InvalidToken as exc:
        return "invalid", str(exc)


def test_one_input(data: bytes) -> None:
    # Both readings a tracker might apply to raw request bytes.
    for token in (data.decode("latin-1"), data.decode("utf-8", "replace")):
        try:
            decoded = CODEC.decode(token)
        except InvalidToken as exc:
            assert reference(token) == ("invalid", str(exc)), token
            continue
        assert reference(token) == ("data", repr(decoded)), token
        canonical = unquote(token).rstrip("=")
        assert CODEC.encode(decoded) == canonical, (token, decoded)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
