"""Self-contained, encrypted link tokens for tracked URLs (SPEC 6).

Every tracked link carries everything the tracker needs to record an event, so any tracker node
can serve any link without a database. The payload is sealed with AES-SIV: it is deterministic
(no nonce to carry, so tokens stay short) yet safe when the same plaintext repeats, and its
16-byte tag means nobody can read the recipient, tags or metadata out of a URL, nor forge or
alter one (no open redirect). A key id in the clear header lets several keys verify while the
first one encrypts, so keys can be rotated without breaking mail already sent.

Token bytes, sent as base64url without padding::

    version (1) | kid length (1) | kid | AES-SIV(plaintext, associated data = the header)

The plaintext is a compact JSON array of the fields in a fixed order, raw-deflated with a preset
dictionary when that makes it shorter; the version byte says which, and as associated data it
cannot be changed without breaking the tag. Any raw DEFLATE stream decodes; the one minted is
specified exactly ("minting's deflate" below), so the C minter and this reference agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import json.encoder
import os
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ._native import load
from .config import Config, ConfigError
from .secret_file import publish_once

# The C minter and opener (_native/tokenmint.c) make and read tokens exactly as the Python
# below, which stays the reference they are tested against; SMTPAPI_PURE_PYTHON=1 forces it.
_tokenmint: Any = load("tokenmint")

KEY_FILE_NAME = "link-keys"
KEY_SIZE = 32

VERSION_RAW = 0x01  # plaintext is the UTF-8 JSON array
VERSION_DEFLATE = 0x02  # plaintext is that array, raw-deflated with ZDICT_V1

# Preset dictionary for VERSION_DEFLATE. FROZEN: tokens in mail already sent decompress with it
# for as long as they live, so never edit it; a better dictionary needs a new version byte.
# Deflate finds nearby strings cheapest, so the most frequent fragments come last.
ZDICT_V1 = (
    b"mailto:unsubscribeutm_content=utm_term=index.html.php?id=.co.uk/.de/.org/.net/"
    b"https://www.linkedin.com/company/https://twitter.com/https://www.instagram.com/"
    b'https://www.facebook.com/@hotmail.com","@outlook.com","@yahoo.com","@gmail.com","'
    b'","https://","http://www.?utm_source=email&utm_medium=email'
    b'?utm_source=newsletter&utm_medium=email&utm_campaign=","https://www..com/'
)

MAX_TOKEN_CHARS = 65536  # bounds the work an arbitrary request can cause
_MAX_PLAINTEXT = 1 << 20
_TAG_SIZE = 16
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
# Codes are positions: append new kinds, never reorder (tokens in sent mail keep their code).
# "unsubscribe" is the RFC 8058 List-Unsubscribe URL (/u/): the message's fields, no target.
_KINDS = ("click", "open", "initial_open", "unsubscribe")
_KIND_CODES = {kind: code for code, kind in enumerate(_KINDS)}
# Array positions: kind, transmission_id, message_id, rcpt_to, injection_time, then optional
# fields whose trailing defaults are left out: expires, campaign_id, tags, metadata, customer_id,
# target_url, link_name, unsubscribe (0/1, shorter than false/true).
_REQUIRED = 5
_SHARED = 10  # fields before target_url: the same for every click link of one copy
_TYPES = (int, str, str, str, int, int, str, list, (dict, type(None)), str, str, str, int)
_DEFAULTS = (None,) * _REQUIRED + (0, "", [], None, "", "", "", 0)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What _dumps writes for one string (its C encoder for ensure_ascii=False): a click token's
# own fields are one to three strings, and going through the encoder for them cost more than
# everything else of the token bar the deflate and the cipher (measured).
_json_string = json.encoder.encode_basestring
_TO_B64URL = bytes.maketrans(b"+/", b"-_")


@dataclass(frozen=True, slots=True)
class TrackingData:
    """What one tracked URL says about the message, recipient and link."""

    kind: Literal["click", "open", "initial_open", "unsubscribe"]
    transmission_id: str
    message_id: str
    rcpt_to: str
    injection_time: int  # unix seconds
    expires: int = 0  # unix seconds; 0 = never
    campaign_id: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    customer_id: str = ""
    target_url: str = ""  # click only
    link_name: str = ""  # click only
    unsubscribe: bool = False  # click only: data-msys-unsubscribe="1"

    def is_expired(self, now: float) -> bool:
        """Whether the link's event should no longer be recorded at unix time ``now``."""
        return self.expires != 0 and now >= self.expires


# The payload's positions, named: the C opener fills these slots of a TrackingData directly
# (its generated __init__ only assigns them: 13 object.__setattr__ calls, 2.4 us a token).
_FIELD_NAMES = tuple(field.name for field in fields(TrackingData))


class InvalidToken(Exception):
    """The token is not one of ours: tampered, truncated, unknown key, or malformed."""


class TokenCodec:
    """Turns :class:`TrackingData` into URL-safe tokens and back; safe to share across threads."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]):
        """``keys`` are ``(key_id, 32-byte key)``; the first encrypts, all decrypt."""
        self._ciphers: dict[bytes, AESSIV] = {}
        self._keys: list[bytes] = []
        for kid, key in keys:
            if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
                raise ValueError(f"key id {kid!r} must be 1-16 characters of A-Z a-z 0-9 _ -")
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise ValueError(f"key {kid!r} must be {KEY_SIZE} bytes")
            if kid.encode() in self._ciphers:
                raise ValueError(f"key id {kid!r} is used twice")
            self._ciphers[kid.encode()] = AESSIV(key)
            self._keys.append(key)
        if not self._ciphers:
            raise ValueError("at least one key is needed")
        self.key_ids: tuple[str, ...] = tuple(kid.decode() for kid in self._ciphers)
        signer = next(iter(self._ciphers))
        self._signer = self._ciphers[signer]
        self._raw_header = bytes([VERSION_RAW, len(signer)]) + signer
        self._deflate_header = bytes([VERSION_DEFLATE, len(signer)]) + signer
        self._minter = None
        self._opener = None
        if _tokenmint is not None:
            self._minter = _tokenmint.Minter(self._keys[0], signer, ZDICT_V1)
            opener = _tokenmint.Opener(
                list(zip(self._ciphers, self._keys, strict=True)),
                ZDICT_V1,
                TrackingData,
                _FIELD_NAMES,
                _KINDS,
                InvalidToken,
            )
            # Its AES-SIV is built from AES-CBC and AES-CTR and checked against OpenSSL's
            # at start; should they ever disagree, the reference decodes.
            self._opener = opener if opener.fast_siv else None

    def encode(self, data: TrackingData) -> str:
        """The token for ``data``: base64url without padding. ValueError if a field is invalid."""
        plain = _dumps(_to_array(data)).encode("utf-8", "surrogatepass")
        if self._minter is not None:
            return self._minter.mint(plain)
        return self._seal(plain, _NO_HEAD.deflate(plain))

    def derived_keys(self, label: bytes) -> list[bytes]:
        """One 32-byte sub-key per link key (the signer's first) for another kind of token:
        HMAC-SHA256(link key, ``label``). A sub-key reveals nothing about its link key, and
        different labels give unrelated keys, so a new token kind needs no new key file."""
        return [hmac.new(key, label, hashlib.sha256).digest() for key in self._keys]

    def click_tokens(self, base: TrackingData) -> ClickTokens:
        """Click tokens for the links of one recipient's copy, sharing what ``base`` says."""
        return ClickTokens(self, base)

    def _seal(self, plain: bytes, packed: bytes) -> str:
        """The token for payload ``plain``, whose raw deflate is ``packed``: the shorter goes."""
        if len(packed) < len(plain):
            header, plain = self._deflate_header, packed
        else:
            header = self._raw_header
        sealed = self._signer.encrypt(plain, [header])
        # base64.urlsafe_b64encode, without its two Python-level calls per token.
        encoded = binascii.b2a_base64(header + sealed, newline=False).translate(_TO_B64URL)
        return encoded.rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> TrackingData:
        """The data sealed in ``token`` (percent-encoding and ``=`` padding are tolerated).

        Raises :class:`InvalidToken` and nothing else for anything we did not issue.
        """
        if self._opener is None:
            return _decode(self._ciphers, token)
        # The C opener: ~1.7 us instead of ~11 us a click token (bench/token_decode.py). It
        # hands back the authentic payload's bytes when its JSON is not the compact kind
        # the minter writes (floats, big integers...): json.loads and the shape check then.
        data = self._opener.open(token)
        return data if type(data) is TrackingData else _from_array(_loads(data))

    @classmethod
    def from_config(cls, config: Config, create: bool = True) -> TokenCodec:
        """The codec for ``[engagement_tracker]`` keys and key file, else the default key file.

        The default is ``link-keys`` in the state directory, created with a random key when
        missing and ``create`` is true; concurrent first starts end up sharing one key.
        """
        tracker = config.engagement_tracker
        keys = [
            _parse_key(text, f"{config.source}: 'engagement_tracker.keys[{i}]'")
            for i, text in enumerate(tracker.keys)
        ]
        if tracker.key_file:
            try:
                keys += _read_key_file(Path(tracker.key_file))
            except FileNotFoundError:
                raise ConfigError(
                    f"{config.source}: 'engagement_tracker.key_file' {tracker.key_file}: "
                    "no such file"
                ) from None
        if not keys:
            keys = _default_keys(Path(config.state_dir) / KEY_FILE_NAME, create)
        try:
            return cls(keys)
        except ValueError as exc:
            raise ConfigError(f"{config.source}: engagement_tracker: {exc}") from None


class ClickTokens:
    """Tokens of one recipient's click links, the same as ``TokenCodec.encode`` makes.

    The fields before the link's own (message, recipient, campaign, tags, metadata, customer)
    are the same for every link of a copy and come first in the payload: their JSON is
    written once, and so is their part of the deflate stream, so each link only serialises
    and compresses its own fields (a newsletter has dozens of links).
    """

    __slots__ = ("_base", "_codec", "_deflater", "_head", "_native")

    def __init__(self, codec: TokenCodec, base: TrackingData):
        self._codec = codec
        self._base = base
        # Validates the shared fields once; a target URL keeps every one of them in the array.
        self._head = (_dumps(_shared_fields(base))[:-1] + ",").encode("utf-8", "surrogatepass")
        self._native = None
        if codec._minter is not None:
            self._native = codec._minter.head(self._head)
        else:
            self._deflater = _HeadDeflater(self._head)

    def encode(self, target_url: str, link_name: str = "", unsubscribe: bool = False) -> str:
        """The token of a click on ``target_url``; ValueError if a field is invalid."""
        if self._native is not None:
            token = self._native.click(target_url, link_name, unsubscribe)
            if token is not None:
                return token
        elif not (type(target_url) is str and type(link_name) is str and type(unsubscribe) is bool):
            raise ValueError("target_url and link_name must be str, unsubscribe a bool")
        if not target_url:  # trailing defaults would leave shared fields out: the long way
            return self._codec.encode(
                replace(
                    self._base,
                    kind="click",
                    target_url=target_url,
                    link_name=link_name,
                    unsubscribe=unsubscribe,
                )
            )
        tail = _link_fields(target_url, link_name, unsubscribe).encode("utf-8", "surrogatepass")
        return self._codec._seal(self._head + tail, self._deflater.deflate(tail))


def _link_fields(target_url: str, link_name: str, unsubscribe: bool) -> str:
    """What ``_dumps`` writes for a click's own fields with their trailing defaults left
    out, less the "[" (the shared head's): ``"url","name",1]``."""
    if unsubscribe:
        return f"{_json_string(target_url)},{_json_string(link_name)},1]"
    if link_name:
        return f"{_json_string(target_url)},{_json_string(link_name)}]"
    return _json_string(target_url) + "]"


def _decode(ciphers: dict[bytes, AESSIV], token: Any) -> TrackingData:
    """``TokenCodec.decode`` in Python, with the codec's ciphers by key id: the reference."""
    raw = _b64decode(token)
    if len(raw) < 2 or raw[0] not in (VERSION_RAW, VERSION_DEFLATE):
        raise InvalidToken("unknown token version")
    end = 2 + raw[1]
    cipher = ciphers.get(raw[2:end])
    if cipher is None or len(raw) < end + _TAG_SIZE:
        raise InvalidToken("unknown key id")
    try:
        plain = cipher.decrypt(raw[end:], [raw[:end]])
    except InvalidTag:
        raise InvalidToken("token does not authenticate") from None
    if raw[0] == VERSION_DEFLATE:
        plain = _inflate(plain)
    return _from_array(_loads(plain))


def generate_key() -> str:
    """A new random key as a key-file / ``engagement_tracker.keys`` line, ``ID:BASE64URL``."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(KEY_SIZE)).rstrip(b"=").decode()
    return f"k{secrets.token_hex(2)}:{secret}"


def _shared_fields(base: TrackingData) -> list[Any]:
    """The first ``_SHARED`` fields of the array of any click with a target on ``base``'s copy
    (what ``_to_array`` gives, without the copy of ``base`` that ``replace`` would cost:
    a third of a copy's click-token set-up, measured)."""
    if not isinstance(base.tags, tuple | list):
        raise ValueError("tags must be a sequence of strings, not a string")
    array = [
        _KIND_CODES["click"],
        base.transmission_id,
        base.message_id,
        base.rcpt_to,
        base.injection_time,
        base.expires,
        base.campaign_id,
        list(base.tags),
        base.metadata,
        base.customer_id,
    ]
    if not _valid(array):
        raise ValueError(f"cannot encode clicks of {base!r}: a field has the wrong type")
    return array


def _to_array(data: TrackingData) -> list[Any]:
    if not isinstance(data.tags, tuple | list):
        raise ValueError("tags must be a sequence of strings, not a string")
    array = [
        _KIND_CODES.get(data.kind),
        data.transmission_id,
        data.message_id,
        data.rcpt_to,
        data.injection_time,
        data.expires,
        data.campaign_id,
        list(data.tags),
        data.metadata,
        data.customer_id,
        data.target_url,
        data.link_name,
        1 if data.unsubscribe else 0,
    ]
    while len(array) > _REQUIRED and array[-1] == _DEFAULTS[len(array) - 1]:
        array.pop()
    if not _valid(array):
        raise ValueError(f"cannot encode {data!r}: a field has the wrong type")
    return array


def _valid(array: Any) -> bool:
    if not isinstance(array, list) or not _REQUIRED <= len(array) <= len(_TYPES):
        return False
    for value, kind in zip(array, _TYPES, strict=False):
        # bool is an int subclass, and no field is encoded as a JSON boolean.
        if type(value) is bool or not isinstance(value, kind):
            return False
    return (
        0 <= array[0] < len(_KINDS)
        and (len(array) < 8 or all(isinstance(tag, str) for tag in array[7]))
        and (len(array) < 13 or array[12] in (0, 1))
    )


def _from_array(array: Any) -> TrackingData:
    if not _valid(array):
        raise InvalidToken("token payload has the wrong shape")
    values = array + list(_DEFAULTS[len(array) :])
    values[0] = _KINDS[values[0]]
    values[7] = tuple(values[7])
    values[12] = bool(values[12])
    return TrackingData(*values)


# --- minting's deflate -----------------------------------------------------------------------
#
# zlib's deflate spent ~4.6 of a C token's 6.4 us finishing its block: building three Huffman
# trees for a ~100-byte tail (Z_FIXED does not spare it). Tokens are minted instead as ONE
# fixed-Huffman block (RFC 1951 3.2.6): BFINAL=1, BTYPE=01, the symbols, end-of-block, zero
# bits to a byte. C token 6.2 -> 0.7 us; tokens of the corpus links 3.3 % longer than zlib's
# (0.9 % without metadata in the head). The window is ZDICT_V1 then the plaintext, so _inflate
# (zlib with the dictionary) reads the stream like any other raw deflate.
#
# The parse is exact, so that the C minter (tokenmint.c, hash chains) and this reference (a
# dict of lists) give the same bytes: greedy, from the plaintext's first byte. At a position
# with at least 3 bytes left, the candidates are the earlier positions of dictionary and
# plaintext at most 32768 back whose next 3 bytes are the same, nearest first, at most
# _MAX_CHAIN of them; a candidate's length is how many bytes from it equal those from the
# position (overlapping allowed), at most 258 and not past the plaintext's end. The longest
# wins, the nearest of equals; it is a match of that length and distance. No candidate (or
# fewer than 3 bytes left): a literal. The cap bounds the work on hostile text (at most 32
# comparisons of candidates per match or literal); on the corpus links 8 would give the same
# bytes as no cap, and a one-step lazy match (zlib's) no shorter token: neither is worth more.
#
# A copy's click payloads share their head, and the symbols for most of it do not depend on
# what follows: _HeadDeflater parses the head once, up to the first position whose symbol
# could (fewer than 3 head bytes left, or a candidate matching up to the head's end), and each
# token resumes there. Bits are kept as a str of "0"/"1" in stream order until the end.

_MIN_MATCH = 3
_MAX_MATCH = 258
_MAX_DISTANCE = 32768
_MAX_CHAIN = 32
_BLOCK_START = "110"  # BFINAL=1, then BTYPE=01 least significant bit first
_END_OF_BLOCK = "0000000"  # symbol 256: the 7-bit code 0
_LENGTH_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                99, 115, 131, 163, 195, 227, 258)  # fmt: skip
_LENGTH_EXTRA = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4 + (0,)
_DISTANCE_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)  # fmt: skip


def _code_bits(code: int, width: int) -> str:
    """A Huffman code in stream order: most significant bit first."""
    return format(code, f"0{width}b")


def _extra_bits(value: int, width: int) -> str:
    """Extra bits in stream order: least significant bit first."""
    return format(value, f"0{width}b")[::-1] if width else ""


# Literal/length codes 0-143: 8 bits from 0x30; 144-255: 9 bits from 0x190; 256-279: 7 bits
# from 0; 280-287: 8 bits from 0xC0. Distance codes: 5 bits.
_LITERAL_BITS = tuple(
    _code_bits(0x30 + byte, 8) if byte < 144 else _code_bits(0x190 + byte - 144, 9)
    for byte in range(256)
)


def _length_bits(length: int) -> str:
    slot = max(i for i, base in enumerate(_LENGTH_BASE) if base <= length)
    symbol = 257 + slot
    code = _code_bits(symbol - 256, 7) if symbol < 280 else _code_bits(0xC0 + symbol - 280, 8)
    return code + _extra_bits(length - _LENGTH_BASE[slot], _LENGTH_EXTRA[slot])


_MATCH_LENGTH_BITS = ("",) * _MIN_MATCH + tuple(
    _length_bits(length) for length in range(_MIN_MATCH, _MAX_MATCH + 1)
)
_distance_bits_cache: dict[int, str] = {}


def _distance_bits(distance: int) -> str:
    bits = _distance_bits_cache.get(distance)
    if bits is None:
        slot = max(i for i, base in enumerate(_DISTANCE_BASE) if base <= distance)
        width = max(0, slot // 2 - 1)  # 0,0,0,0,1,1,2,2,...,13,13
        bits = _code_bits(slot, 5) + _extra_bits(distance - _DISTANCE_BASE[slot], width)
        _distance_bits_cache[distance] = bits  # at most 32768 entries
    return bits


def _index_of(data: bytes) -> dict[bytes, list[int]]:
    """Positions of ``data`` by their next 3 bytes, ascending."""
    index: dict[bytes, list[int]] = {}
    for position in range(len(data) - _MIN_MATCH + 1):
        index.setdefault(data[position : position + _MIN_MATCH], []).append(position)
    return index


_DICT_INDEX = _index_of(ZDICT_V1)
_DICT_INDEXED = max(0, len(ZDICT_V1) - _MIN_MATCH + 1)  # positions before it are indexed


def _parse(
    window: bytes,
    position: int,
    indexed: int,
    indexes: tuple[dict[bytes, list[int]], ...],
    bits: list[str],
    head: bool,
) -> tuple[int, int]:
    """Append the bits of the symbols for ``window[position:]`` to ``bits``.

    Positions before ``indexed`` are in ``indexes`` (newest first, each ascending); the later
    ones go into ``indexes[0]`` as the parse passes them. ``head``: ``window`` ends where the
    head does; stop at the first symbol that could depend on what follows. Returns where the
    parse stopped and the new ``indexed``.
    """
    newest = indexes[0]
    end = len(window)
    while position < end:
        if position + _MIN_MATCH > end:
            if head:
                break
            bits.append(_LITERAL_BITS[window[position]])
            position += 1
            continue
        while indexed < position:
            key = window[indexed : indexed + _MIN_MATCH]
            positions = newest.get(key)
            if positions is None:
                newest[key] = [indexed]
            else:
                positions.append(indexed)
            indexed += 1
        key = window[position : position + _MIN_MATCH]
        candidates: list[int] = []
        for index in indexes:
            positions = index.get(key)
            if positions:
                candidates += positions[-1 : -(_MAX_CHAIN - len(candidates)) - 1 : -1]
                if len(candidates) == _MAX_CHAIN:
                    break
        limit = min(_MAX_MATCH, end - position)
        floor = position - _MAX_DISTANCE
        best = distance = 0
        for candidate in candidates:
            if candidate < floor:
                break
            # Only a candidate equal up to one byte past the best so far can beat it.
            if window[candidate + best] != window[position + best]:
                continue
            length = _MIN_MATCH
            while length < limit and window[candidate + length] == window[position + length]:
                length += 1
            if length > best:
                best, distance = length, position - candidate
                if length == limit:
                    break
        if best:
            if head and best == end - position and best < _MAX_MATCH:
                break  # the head's end cut this match short: the tail may lengthen it
            bits.append(_MATCH_LENGTH_BITS[best])
            bits.append(_distance_bits(distance))
            position += best
        else:
            bits.append(_LITERAL_BITS[window[position]])
            position += 1
    return position, indexed


class _HeadDeflater:
    """Minting's deflate of the plaintexts that start with ``head``: the head parsed once."""

    __slots__ = ("_bits", "_index", "_indexed", "_resume", "_window")

    def __init__(self, head: bytes):
        self._window = ZDICT_V1 + head
        self._index: dict[bytes, list[int]] = {}
        bits = [_BLOCK_START]
        self._resume, self._indexed = _parse(
            self._window,
            len(ZDICT_V1),
            _DICT_INDEXED,
            (self._index, _DICT_INDEX),
            bits,
            head=True,
        )
        self._bits = "".join(bits)

    def deflate(self, tail: bytes) -> bytes:
        """The raw deflate stream of the head then ``tail``."""
        bits = [self._bits]
        # The positions indexed per token go into a dict of their own: the head's stay as
        # they are for the next token (and for another thread).
        _parse(
            self._window + tail,
            self._resume,
            self._indexed,
            ({}, self._index, _DICT_INDEX),
            bits,
            head=False,
        )
        bits.append(_END_OF_BLOCK)
        stream = "".join(bits)
        stream += "0" * (-len(stream) % 8)
        # In stream order the first bit is the least significant of the first byte: reversed,
        # the whole string is one little-endian number.
        return int(stream[::-1], 2).to_bytes(len(stream) // 8, "little")


_NO_HEAD = _HeadDeflater(b"")


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_VALUES = {char: value for value, char in enumerate(_B64URL)}
_TO_STANDARD_B64 = bytes.maketrans(b"-_", b"+/")
# The bits the last character of a token of length % 4 == 2 or 3 carries beyond the bytes.
_UNUSED_BITS = {0: 0, 2: 0x0F, 3: 0x03}


def _b64decode(token: Any) -> bytes:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("not a token")
    text = unquote(token).rstrip("=")
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidToken("not base64url")
    # Unused low bits in the last character would give one token several spellings. Checked
    # on that character, not by encoding the bytes again (a click's token is decoded on every
    # request: this is a third of the base64 work).
    if text and _B64URL_VALUES[text[-1]] & _UNUSED_BITS[len(text) % 4]:
        raise InvalidToken("non-canonical base64url")
    try:
        # The regex admitted only the alphabet, so the standard decoder after the swap of
        # "-_" reads exactly base64url.
        return binascii.a2b_base64(
            (text + "=" * (-len(text) % 4)).encode("ascii").translate(_TO_STANDARD_B64)
        )
    except binascii.Error:
        raise InvalidToken("not base64url") from None


# A prototype with the dictionary set, copied per token: cheaper than a new decompressor.
_INFLATER = zlib.decompressobj(-15, zdict=ZDICT_V1)
_FIRST_CHUNK = 1 << 14  # a token's plaintext is rarely larger; bigger ones take a second pass


def _inflate(packed: bytes) -> bytes:
    inflater = _INFLATER.copy()
    try:
        # Bounded output: a small token must not inflate into megabytes (a zip bomb).
        plain = inflater.decompress(packed, _FIRST_CHUNK)
        # A full first chunk may end short of the stream's end with all input read (the last
        # match's bytes, the end-of-block code already in zlib's bit buffer): ask on then too,
        # not only when input is left, or a valid token over 16 KiB would be refused.
        if not inflater.eof and len(plain) == _FIRST_CHUNK:
            plain += inflater.decompress(inflater.unconsumed_tail, _MAX_PLAINTEXT - len(plain))
    except zlib.error:
        raise InvalidToken("bad compressed payload") from None
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise InvalidToken("bad compressed payload")
    return plain


def _loads(plain: bytes) -> Any:
    # The stdlib, not orjson (~1.5 us less a token): orjson reads an integer past 64 bits
    # as a float, so metadata holding one would not come back as it was sealed.
    try:
        return json.loads(plain.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidToken("bad payload") from None


def _parse_key(text: str, where: str) -> tuple[str, bytes]:
    # Error messages never quote the text: it may be the secret itself.
    kid, _, secret = text.strip().partition(":")
    if not _KID_RE.fullmatch(kid):
        raise ConfigError(f"{where} needs a key id of 1-16 characters of A-Z a-z 0-9 _ -")
    secret = secret.strip().rstrip("=")
    key = b""
    if _B64URL_RE.fullmatch(secret) and len(secret) % 4 != 1:
        key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{where} is not base64url of {KEY_SIZE} bytes")
    return kid, key


def _read_key_file(path: Path) -> list[tuple[str, bytes]]:
    """Keys from ``path`` (``ID:BASE64URL`` lines); FileNotFoundError is left to the caller."""
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_mode & 0o066:
                raise ConfigError(
                    f"{path}: key file is readable or writable by group or others (chmod 600 it)"
                )
            text = file.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: key file is not UTF-8 text") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    keys = [
        _parse_key(line, f"{path}: line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise ConfigError(f"{path}: key file holds no keys")
    return keys


def _default_keys(path: Path, create: bool) -> list[tuple[str, bytes]]:
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"{path}: no such key file (it is created on first start)") from None
    try:
        return _create_key_file(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create key file: {exc.strerror}") from None


def _create_key_file(path: Path) -> list[tuple[str, bytes]]:
    """Publish a new key file at ``path`` unless one appears first; return the keys in it.

    When the milter and the tracker start together the loser reads the winner's key instead
    of replacing it (a key lost or replaced would break every link already sent).
    """
    content = f"# smtpapi-milter link-token keys: ID:BASE64URL, the first signs\n{generate_key()}\n"
    publish_once(path, content.encode())
    return _read_key_file(path)
