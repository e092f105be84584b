"""The return path the milter gives a copy (``bounce_domain``, SPEC 13): an address whose local
part says, authenticated, which message and copy a bounce or complaint sent to it is about.

A click token (tokens.py) is far too long for a local part (RFC 5321: at most 64 octets), and
some MTAs lower-case local parts on the way, so base64 is out. This token is compact instead::

    bounce-<base32, lower case, no padding, of 23 bytes>@<bounce_domain>

    23 bytes = flags (1) | transmission id (8, big-endian) | copy index (2) | tag (12)

``flags`` is the format version (high nibble, 1) and whether the copy is a shared body (bit 0:
the report names the recipient, the token names none). The copy index is the one in the copy's
message id (ids.message_id), so transmission id and index find the copy's injection event, and
with it campaign, tags, metadata and the recipient it was sent to. The local part is 44 octets.

Forgery resistance: ``tag`` is HMAC-SHA256 over the first 11 bytes, truncated to 96 bits,
under a sub-key derived from each link key (``TokenCodec.derived_keys``, label
``smtpapi-milter return-path v1``), so any tracker or milter node verifies it with no lookup
and a key rotation keeps old addresses verifying while the old key is listed. Without the key,
a forged or altered address verifies with probability 2**-96 per key per attempt, and every
attempt costs the forger a mail delivered to us: out of reach. Decoding is canonical (one
spelling per token; case folded first), so changing any character changes the bytes the tag
covers. What the tag cannot stop is replay: the recipient sees its own return path and could
send a fake report to it, which can only record a bounce or complaint about that recipient's
own copy (and suppress that recipient), no more than unsubscribing would. Except for a shared
body: its token names no recipient and its injection none either, so the report's own
addresses are taken (README: Out-of-band bounces and complaints).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

LABEL = b"smtpapi-milter return-path v1"
PREFIX = "bounce-"
VERSION = 1
SHARED = 0x01
TAG_SIZE = 12
_BODY = 11  # flags, transmission id, index
_SIZE = _BODY + TAG_SIZE
_CHARS = 37  # base32 of 23 bytes, unpadded
LOCAL_PART_LIMIT = 64  # RFC 5321 4.5.3.1.1
# A token anywhere in a text (an argv recipient, a DSN's returned headers), any case.
TOKEN_IN_TEXT = re.compile(re.escape(PREFIX) + rf"([a-z2-7]{{{_CHARS}}})@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReturnPathToken:
    transmission_id: str  # decimal, as in events
    index: int  # the copy's index in its message id
    shared: bool  # a shared body: the token names no recipient


class ForgedReturnPath(Exception):
    """Not a return path we issued: malformed, altered, or signed with a key we do not hold."""


class ReturnPaths:
    """Makes and verifies return-path addresses; the first sub-key signs, all verify."""

    def __init__(self, keys: Sequence[bytes]):
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = tuple(keys)

    @classmethod
    def from_codec(cls, codec) -> ReturnPaths:
        return cls(codec.derived_keys(LABEL))

    def local_part(self, token: ReturnPathToken) -> str:
        tid = int(token.transmission_id)
        if not 0 <= tid < 1 << 64 or not 0 <= token.index < 1 << 16:
            raise ValueError(f"cannot encode {token!r}")
        flags = VERSION << 4 | (SHARED if token.shared else 0)
        body = bytes([flags]) + tid.to_bytes(8, "big") + token.index.to_bytes(2, "big")
        text = base64.b32encode(body + _tag(self._keys[0], body)).decode("ascii")
        return PREFIX + text.rstrip("=").lower()

    def address(self, token: ReturnPathToken, domain: str) -> str:
        return f"{self.local_part(token)}@{domain}"

    def for_copy(self, domain: str, mail_from: str, transmission_id: str, index: int) -> str:
        """The return path of copy ``index`` (of a copy shared by several recipients when
        ``index`` is None) at ``domain`` ('' when unset); none for a message with the null
        sender: it is itself a bounce, and nothing may answer it."""
        if not domain or not mail_from.strip("<>"):
            return ""
        token = ReturnPathToken(transmission_id, index or 0, shared=index is None)
        return self.address(token, domain)

    def verify(self, local_part: str) -> ReturnPathToken:
        """The token in ``local_part`` (with or without the prefix, any case)."""
        text = local_part.strip().lower()
        if text.startswith(PREFIX):
            text = text[len(PREFIX) :]
        if len(text) != _CHARS or not re.fullmatch(r"[a-z2-7]+", text):
            raise ForgedReturnPath("not a return-path token")
        try:
            raw = base64.b32decode(text.upper() + "===")
        except binascii.Error:
            raise ForgedReturnPath("not base32") from None
        # Unused low bits in the last character would give one token several spellings.
        if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != text:
            raise ForgedReturnPath("non-canonical base32")
        body, tag = raw[:_BODY], raw[_BODY:]
        if not any(hmac.compare_digest(_tag(key, body), tag) for key in self._keys):
            raise ForgedReturnPath("return-path token does not authenticate")
        if body[0] >> 4 != VERSION or body[0] & 0x0F & ~SHARED:
            raise ForgedReturnPath("unknown return-path token version")
        return ReturnPathToken(
            transmission_id=str(int.from_bytes(body[1:9], "big")),
            index=int.from_bytes(body[9:11], "big"),
            shared=bool(body[0] & SHARED),
        )

    def find(self, *texts: str) -> ReturnPathToken | None:
        """The first token in ``texts`` that verifies (None: none found, or all forged).

        Raises ForgedReturnPath when tokens were found and none verifies, so a report to a
        forged address is told apart from a report with no token at all."""
        forged: ForgedReturnPath | None = None
        for text in texts:
            for match in TOKEN_IN_TEXT.finditer(text or ""):
                try:
                    return self.verify(match[1])
                except ForgedReturnPath as exc:
                    forged = exc
        if forged is not None:
            raise forged
        return None


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_SIZE]
