"""Link tokens: round trips, tamper resistance, privacy, key rotation, key files (SPEC 6)."""

import base64
import dataclasses
import os
import stat
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter import tokens
from smtpapi_milter.config import Config, ConfigError, TrackerConfig
from smtpapi_milter.tokens import (
    VERSION_DEFLATE,
    VERSION_RAW,
    ZDICT_V1,
    InvalidToken,
    TokenCodec,
    TrackingData,
    generate_key,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
CODEC = TokenCodec([("k1", KEY_A)])
URL = (
    "https://www.example.com/products/shoes"
    "?utm_source=newsletter&utm_medium=email&utm_campaign=bf2026"
)
CLICK = TrackingData(
    kind="click",
    transmission_id="7234567890123456789",
    message_id="0123456789abcdef0123",
    rcpt_to="jane.doe@example.com",
    injection_time=1780000000,
    expires=1780000000 + 31536000,
    campaign_id="black-friday-2026",
    tags=("newsletter", "promo", "shoes"),
    metadata={"user_id": "12345", "segment": "vip"},
    customer_id="42",
    target_url=URL,
    link_name="Shop now",
    unsubscribe=True,
)
OPEN = dataclasses.replace(CLICK, kind="open", target_url="", link_name="", unsubscribe=False)
TINY = TrackingData("open", "1", "m", "a@b", 1)
# Greek letters are two high bytes each in UTF-8: deflate cannot shrink them, so this stays raw.
INCOMPRESSIBLE = TrackingData("open", "1", "m", "Ωμέγα@παράδειγμα", 1)


def raw_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def kid_of(token: str) -> bytes:
    raw = raw_bytes(token)
    return raw[2 : 2 + raw[1]]


def seal(payload: bytes, version: int = VERSION_RAW, kid: bytes = b"k1", key=KEY_A) -> str:
    """A token authenticated with our key around an arbitrary payload."""
    header = bytes([version, len(kid)]) + kid
    return b64(header + AESSIV(key).encrypt(payload, [header]))


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=ZDICT_V1)
    return packer.compress(data) + packer.flush()


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["click", "open", "initial_open", "unsubscribe"])
def test_round_trip_every_kind_every_field(kind):
    data = dataclasses.replace(CLICK, kind=kind)
    token = CODEC.encode(data)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert CODEC.decode(token) == data


@pytest.mark.parametrize("kind", ["click", "open", "initial_open", "unsubscribe"])
def test_round_trip_defaults(kind):
    data = TrackingData(kind, "", "", "", 0)
    assert CODEC.decode(CODEC.encode(data)) == data


def test_round_trip_unicode_everywhere_and_nested_metadata():
    data = TrackingData(
        kind="click",
        transmission_id="tx-ü-😀",
        message_id="mid-日本",
        rcpt_to="δοκιμή@παράδειγμα.δοκιμή",
        injection_time=2**40,
        expires=2**41,
        campaign_id="kampagne-größe",
        tags=("ñ", "标签", "", "\u2028"),
        metadata={"a": {"b": [1, 2.5, None, True, {"c": "ß"}]}, "é": [], "\x00": "\ud800"},
        customer_id="客户",
        target_url="https://例え.テスト/パス?q=ü#frag",
        link_name="Jetzt kaufen →",
        unsubscribe=False,
    )
    assert CODEC.decode(CODEC.encode(data)) == data


def test_empty_metadata_is_not_none():
    for metadata in ({}, None):
        data = dataclasses.replace(TINY, metadata=metadata)
        assert CODEC.decode(CODEC.encode(data)).metadata == metadata


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
tracking_data = st.builds(
    TrackingData,
    kind=st.sampled_from(["click", "open", "initial_open", "unsubscribe"]),
    transmission_id=st.text(),
    message_id=st.text(),
    rcpt_to=st.text(),
    injection_time=st.integers(0, 2**40),
    expires=st.integers(0, 2**40),
    campaign_id=st.text(),
    tags=st.lists(st.text(), max_size=4).map(tuple),
    metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=4),
    customer_id=st.text(),
    target_url=st.text(),
    link_name=st.text(),
    unsubscribe=st.booleans(),
)


def codec_deflate(plain: bytes) -> bytes:
    return tokens._NO_HEAD.deflate(plain)


@settings(max_examples=300)
@given(tracking_data)
def test_round_trip_property(data):
    token = CODEC.encode(data)
    assert CODEC.decode(token) == data
    plain = tokens._dumps(tokens._to_array(data)).encode("utf-8", "surrogatepass")
    compressed = len(codec_deflate(plain)) < len(plain)
    assert raw_bytes(token)[0] == (VERSION_DEFLATE if compressed else VERSION_RAW)


def test_metadata_past_64_bit_integers_and_lone_surrogates_round_trip():
    # Both are what orjson would not read back as sealed (a float; a refusal), should token
    # decoding ever be tempted by it.
    data = dataclasses.replace(CLICK, metadata={"big": 2**70, "neg": -(2**64), "s": "\udc80"})
    assert CODEC.decode(CODEC.encode(data)) == data


@settings(max_examples=300)
@given(tracking_data, st.lists(st.tuples(st.text(), st.text(), st.booleans()), max_size=3))
def test_click_tokens_decode_like_encode(base, links):
    # A copy's click tokens share its fields' JSON and the deflate of their head: the same
    # token as the one-shot encode (the head's parse stops where the tail could change it),
    # and a decoder that never heard of the sharing reads them.
    clicks = CODEC.click_tokens(base)
    for url, name, unsubscribe in links:
        token = clicks.encode(url, name, unsubscribe)
        want = dataclasses.replace(
            base, kind="click", target_url=url, link_name=name, unsubscribe=unsubscribe
        )
        assert CODEC.decode(token) == want
        assert token == CODEC.encode(want)


def test_click_tokens_refuse_bad_fields():
    with pytest.raises(ValueError):
        CODEC.click_tokens(dataclasses.replace(CLICK, tags="newsletter"))
    clicks = CODEC.click_tokens(OPEN)
    for bad in [(None, "", False), (URL, None, False), (URL, "", 1)]:
        with pytest.raises(ValueError):
            clicks.encode(*bad)


def test_same_data_same_token():
    # Deterministic (AES-SIV): the pipeline may cache, and a repeated link stays identical.
    assert CODEC.encode(CLICK) == CODEC.encode(CLICK)


# Fields of the wrong type: encoding refuses each (and ClickTokens' own head as well, below).
BAD_FIELDS = [
    {"kind": "view"},
    {"tags": "newsletter"},
    {"tags": ("ok", 3)},
    {"injection_time": 1.5},
    {"expires": "soon"},
    {"rcpt_to": None},
    {"metadata": ["not", "an", "object"]},
]


@pytest.mark.parametrize("change", BAD_FIELDS)
def test_encode_refuses_bad_fields(change):
    with pytest.raises(ValueError):
        CODEC.encode(dataclasses.replace(CLICK, **change))


def test_is_expired():
    assert not TINY.is_expired(10**12)
    data = dataclasses.replace(TINY, expires=100)
    assert not data.is_expired(99)
    assert data.is_expired(100)


# --- compression ---------------------------------------------------------------------------


def test_incompressible_payload_is_raw():
    assert raw_bytes(CODEC.encode(INCOMPRESSIBLE))[0] == VERSION_RAW


def test_tiny_payload_is_raw_when_deflate_does_not_pay():
    data = TrackingData("open", "", "", "", 0)
    plain = tokens._dumps(tokens._to_array(data)).encode()
    assert len(plain) == 14
    token = CODEC.encode(data)
    # 14 bytes deflate to 9 with the dictionary; either way the token holds the shorter one.
    assert len(codec_deflate(plain)) == 9
    assert len(raw_bytes(token)) == 4 + 16 + min(len(plain), len(codec_deflate(plain)))


def test_long_url_payload_is_compressed_and_shorter():
    token = CODEC.encode(CLICK)
    assert raw_bytes(token)[0] == VERSION_DEFLATE
    raw_codec_len = 4 + 16 + len(tokens._dumps(tokens._to_array(CLICK)).encode())
    assert len(raw_bytes(token)) < raw_codec_len


# --- minting's deflate ---------------------------------------------------------------------


def spec_deflate(plain: bytes) -> bytes:
    """Minting's deflate as tokens.py specifies it, the slow obvious way (rfind for each
    candidate, the RFC 1951 code tables worked out from their rules, one int for the bits)."""
    window = ZDICT_V1 + plain
    end = len(window)
    stream, count = 0b011, 3  # BFINAL=1, BTYPE=01 (fixed Huffman codes)

    def put(value: int, width: int, huffman: bool = False) -> None:
        nonlocal stream, count
        if huffman:  # Huffman codes go most significant bit first
            value = int(format(value, f"0{width}b")[::-1], 2) if width else 0
        stream |= value << count
        count += width

    def symbol(code: int) -> None:  # RFC 1951 3.2.6
        if code < 144:
            put(0x30 + code, 8, True)
        elif code < 256:
            put(0x190 + code - 144, 9, True)
        elif code < 280:
            put(code - 256, 7, True)
        else:
            put(0xC0 + code - 280, 8, True)

    length_codes, base = [], 3  # (code, base, extra bits) for 257..284, then 285 is 258
    for code in range(257, 285):
        extra = 0 if code < 265 else (code - 261) // 4
        length_codes.append((code, base, extra))
        base += 1 << extra
    distance_codes, base = [], 1
    for code in range(30):
        extra = max(0, code // 2 - 1)
        distance_codes.append((code, base, extra))
        base += 1 << extra

    position = len(ZDICT_V1)
    while position < end:
        best = distance = 0
        if position + 3 <= end:
            key = window[position : position + 3]
            limit = min(258, end - position)
            candidate, seen = position, 0
            while seen < tokens._MAX_CHAIN:
                # the nearest start before the last candidate, at most 32768 back
                candidate = window.rfind(key, max(0, position - 32768), candidate + 2)
                if candidate < 0:
                    break
                seen += 1
                length = 0
                while length < limit and window[candidate + length] == window[position + length]:
                    length += 1
                if length > best:
                    best, distance = length, position - candidate
        if best:
            if best == 258:
                symbol(285)
            else:
                code, base, extra = [c for c in length_codes if c[1] <= best][-1]
                symbol(code)
                put(best - base, extra)
            code, base, extra = [c for c in distance_codes if c[1] <= distance][-1]
            put(code, 5, True)
            put(distance - base, extra)
            position += best
        else:
            symbol(window[position])
            position += 1
    symbol(256)
    return stream.to_bytes((count + 7) // 8, "little")


# Text the parse finds matches in: dictionary pieces, repeats, bytes >= 144 (9-bit literals).
deflate_pieces = st.lists(
    st.sampled_from(
        [b"a", b"b", b"ab", b"aab", b"https://www.", b'","', b".com/", b"\xc3\xa9", b"\xff"]
    )
    | st.binary(max_size=4),
    max_size=120,
).map(b"".join)
# Where the parse's rules bite: the 32-candidate cap (the 41st nearest "abc" is the longest),
# the 258 limit and overlapping matches, the 32768-byte reach (a repeat just inside, one just
# beyond), and the end of the plaintext cutting a match short.
_FILLER = bytes(range(256)) * 128  # repeats 256 back, never holds "QWE"
CHAIN_CAP_BITES = b"abcXYZ" + b"".join(b"abcY" + bytes([i]) for i in range(40)) + b"abcXYZ"
DEFLATE_EDGES = [
    b"",
    b"a",
    CHAIN_CAP_BITES,
    b"a" * 1000,
    b"ab" * 700 + b"c",
    b"QWERTYUIOP" + _FILLER[: 32768 - 10] + b"QWERTYUIOP",
    b"QWERTYUIOP" + _FILLER[: 32768 - 9] + b"QWERTYUIOP",
    ZDICT_V1[-40:] + ZDICT_V1[:30],
    b"https://www.linkedin.com/company/https://twitter.com/",
]


@pytest.mark.parametrize("plain", DEFLATE_EDGES, ids=range(len(DEFLATE_EDGES)))
def test_minting_deflate_edges_are_the_specified_stream(plain):
    assert codec_deflate(plain) == spec_deflate(plain)


def test_the_edges_reach_the_chain_cap_and_the_window_bound(monkeypatch):
    capped = spec_deflate(CHAIN_CAP_BITES)
    just_inside, just_beyond = DEFLATE_EDGES[5], DEFLATE_EDGES[6]
    assert len(spec_deflate(just_inside)) < len(spec_deflate(just_beyond))
    monkeypatch.setattr(tokens, "_MAX_CHAIN", 1 << 20)
    assert len(spec_deflate(CHAIN_CAP_BITES)) < len(capped)


@settings(max_examples=300)
@given(deflate_pieces)
def test_minting_deflate_is_the_specified_stream(plain):
    assert codec_deflate(plain) == spec_deflate(plain)


@settings(max_examples=300)
@given(deflate_pieces, deflate_pieces)
def test_a_head_parsed_once_gives_the_same_stream(head, tail):
    # The head's parse stops at the first symbol the tail could change; a token resumes there.
    assert tokens._HeadDeflater(head).deflate(tail) == spec_deflate(head + tail)


@settings(max_examples=300)
@given(st.binary(max_size=3000) | deflate_pieces)
def test_zlib_inflates_the_minted_stream_to_the_plaintext(plain):
    packed = codec_deflate(plain)
    assert packed[0] & 0b111 == 0b011  # one block, the last, with the fixed codes
    inflater = zlib.decompressobj(-15, zdict=ZDICT_V1)
    assert inflater.decompress(packed) == plain
    assert inflater.eof and not inflater.unused_data


def test_tokens_minted_by_zlib_still_decode():
    # Mail already sent carries zlib's streams (what minting wrote up to 2026-12): same
    # version byte, same dictionary, and the decoder takes any raw deflate.
    plain = tokens._dumps(tokens._to_array(CLICK)).encode()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -12, 4, zdict=ZDICT_V1)
    packed = deflater.compress(plain) + deflater.flush()
    assert packed != codec_deflate(plain)
    assert CODEC.decode(seal(packed, VERSION_DEFLATE)) == CLICK


# --- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [INCOMPRESSIBLE, CLICK], ids=["raw", "deflate"])
def test_every_single_byte_flip_is_rejected(data):
    raw = raw_bytes(CODEC.encode(data))
    for position in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(raw)
            tampered[position] ^= mask
            with pytest.raises(InvalidToken):
                CODEC.decode(b64(bytes(tampered)))


@pytest.mark.parametrize("data", [INCOMPRESSIBLE, CLICK], ids=["raw", "deflate"])
def test_truncation_and_extension_are_rejected(data):
    token = CODEC.encode(data)
    raw = raw_bytes(token)
    for length in range(len(raw)):
        with pytest.raises(InvalidToken):
            CODEC.decode(b64(raw[:length]))
    for length in range(len(token)):
        with pytest.raises(InvalidToken):
            CODEC.decode(token[:length])
    for extra in (b"\x00", b"A", raw[-16:], raw):
        with pytest.raises(InvalidToken):
            CODEC.decode(b64(raw + extra))


def test_token_from_another_key_is_rejected():
    same_kid_other_key = TokenCodec([("k1", KEY_B)])
    other_kid = TokenCodec([("k2", KEY_B)])
    for codec in (same_kid_other_key, other_kid):
        with pytest.raises(InvalidToken):
            CODEC.decode(codec.encode(CLICK))


def test_header_is_authenticated():
    # Same key under two ids: only the associated data stops a relabelled token.
    codec = TokenCodec([("a", KEY_A), ("b", KEY_A)])
    raw = raw_bytes(codec.encode(CLICK))
    assert raw[1:3] == b"\x01a"
    with pytest.raises(InvalidToken):
        codec.decode(b64(raw[:2] + b"b" + raw[3:]))


def test_non_canonical_base64_is_rejected():
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tried = 0
    for length in range(1, 8):
        token = CODEC.encode(dataclasses.replace(TINY, rcpt_to="x" * length))
        for char in alphabet:
            variant = token[:-1] + char
            if variant != token and raw_bytes(variant) == raw_bytes(token):
                tried += 1
                with pytest.raises(InvalidToken):
                    CODEC.decode(variant)
    assert tried > 0


@pytest.mark.parametrize(
    "token",
    [
        seal(b"[]"),
        seal(b"{}"),
        seal(b"not json"),
        seal(b"\xff\xfe"),
        seal(b'[4,"t","m","r",1]'),
        seal(b'[true,"t","m","r",1]'),
        seal(b'[0,"t","m","r",1.5]'),
        seal(b'[0,"t","m","r",1,0,"",[1]]'),
        seal(b'[0,"t","m","r",1,0,"",[],[]]'),
        seal(b'[0,"t","m","r",1,0,"",[],null,"","","",2]'),
        seal(b'[0,"t","m","r",1,0,"",[],null,"","","",0,"extra"]'),
        seal(b"[" * 100000),
        seal(b'[0,"t","m","r",1]', VERSION_DEFLATE),
        seal(deflate(b'[0,"t","m","r",1]') + b"junk", VERSION_DEFLATE),
        seal(deflate(b'[0,"t","m","r",1]')[:-2], VERSION_DEFLATE),
        seal(b'[0,"t","m","r",1]', version=0x03),
        seal(b'[0,"t","m","r",1]', kid=b""),
        "",
        "=",
        "A",
        "AA==",
        "!!!!",
        "k1+/",
        "AQJrMQ",
    ],
)
def test_authentic_but_malformed_or_garbage_is_rejected(token):
    with pytest.raises(InvalidToken):
        CODEC.decode(token)


def test_authentic_well_formed_payload_decodes():
    # The counterpart of the test above: seal() itself produces valid tokens.
    assert CODEC.decode(seal(b'[1,"t","m","r",1]')) == TrackingData("open", "t", "m", "r", 1)
    packed = seal(deflate(b'[1,"t","m","r",1]'), VERSION_DEFLATE)
    assert CODEC.decode(packed) == TrackingData("open", "t", "m", "r", 1)


@pytest.mark.parametrize("token", [None, b"AQJrMQ", 123, "A" * 70000])
def test_non_strings_and_huge_inputs_are_rejected(token):
    with pytest.raises(InvalidToken):
        CODEC.decode(token)


@settings(max_examples=500)
@given(st.text())
def test_arbitrary_text_raises_only_invalid_token(text):
    with pytest.raises(InvalidToken):
        CODEC.decode(text)


@settings(max_examples=500)
@given(st.sampled_from([VERSION_RAW, VERSION_DEFLATE]), st.binary())
def test_arbitrary_body_under_a_valid_header_raises_only_invalid_token(version, body):
    with pytest.raises(InvalidToken):
        CODEC.decode(b64(bytes([version, 2]) + b"k1" + body))


# --- privacy -------------------------------------------------------------------------------

SECRETS = [
    "jane.doe@example.com",
    "jane.doe",
    "example.com",
    "black-friday",
    "newsletter",
    "promo",
    "shoes",
    "user_id",
    "12345",
    "segment",
    "vip",
    "bf2026",
]


def inflated_prefixes(raw: bytes) -> list[bytes]:
    """Everything raw-inflating any suffix of ``raw`` yields before it fails."""
    outputs = []
    for start in range(len(raw)):
        for zdict in (ZDICT_V1, None):
            inflater = zlib.decompressobj(-15, **({"zdict": zdict} if zdict else {}))
            out = b""
            try:
                for index in range(start, len(raw)):
                    out += inflater.decompress(raw[index : index + 1])
            except zlib.error:
                pass
            outputs.append(out)
    return outputs


@pytest.mark.parametrize("data", [CLICK, OPEN, dataclasses.replace(TINY, rcpt_to="vip@x.io")])
def test_recipient_tags_metadata_campaign_are_not_readable(data):
    token = CODEC.encode(data)
    raw = raw_bytes(token)
    inflated = inflated_prefixes(raw)
    for secret in SECRETS:
        if secret not in repr(data):
            continue
        assert secret not in token
        assert secret.encode() not in raw
        assert secret.encode().upper() not in raw.upper()
        if secret.encode() not in ZDICT_V1:  # garbage inflates to dictionary words
            assert not any(secret.encode() in out for out in inflated)


# --- rotation ------------------------------------------------------------------------------


def test_key_rotation():
    old = TokenCodec([("old", KEY_A)])
    both = TokenCodec([("new", KEY_B), ("old", KEY_A)])
    new_only = TokenCodec([("new", KEY_B)])
    old_token = old.encode(CLICK)
    assert kid_of(old_token) == b"old"
    assert both.decode(old_token) == CLICK
    assert kid_of(both.encode(CLICK)) == b"new"
    assert new_only.decode(both.encode(CLICK)) == CLICK
    assert both.key_ids == ("new", "old")
    with pytest.raises(InvalidToken):
        new_only.decode(old_token)


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [("", KEY_A)],
        [("a" * 17, KEY_A)],
        [("bad id", KEY_A)],
        [("k\n", KEY_A)],
        [("k1", KEY_A[:16])],
        [("k1", "x" * 32)],
        [("k1", KEY_A), ("k1", KEY_B)],
    ],
)
def test_constructor_refuses_bad_keys(keys):
    with pytest.raises(ValueError):
        TokenCodec(keys)


# --- percent-encoding ----------------------------------------------------------------------


def test_percent_encoded_and_padded_tokens_decode():
    candidates = (dataclasses.replace(CLICK, customer_id=str(n)) for n in range(1000))
    data, token = next((d, t) for d in candidates if "-" in (t := CODEC.encode(d)) and "_" in t)
    variants = [
        quote(token, safe=""),
        token.replace("-", "%2D").replace("_", "%5f"),
        "".join(f"%{ord(c):02X}" for c in token),
        token + "=" * (-len(token) % 4),
        token + "%3D" * (-len(token) % 4),
    ]
    for variant in variants:
        assert CODEC.decode(variant) == data


# --- keys from configuration ---------------------------------------------------------------


def config_for(tmp_path: Path, **tracker) -> Config:
    return Config(
        state_dir=str(tmp_path / "state"),
        engagement_tracker=TrackerConfig(**tracker),
        source="/etc/x.toml",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_key_file_created_private_and_reused(tmp_path):
    config = config_for(tmp_path)
    first = TokenCodec.from_config(config)
    key_file = tmp_path / "state" / "link-keys"
    assert mode(key_file) == 0o600
    assert mode(tmp_path / "state") == 0o700
    content = key_file.read_text()
    second = TokenCodec.from_config(config, create=False)
    assert key_file.read_text() == content
    assert second.key_ids == first.key_ids
    assert second.encode(CLICK) == first.encode(CLICK)
    assert sorted(os.listdir(tmp_path / "state")) == ["link-keys"]


def test_missing_default_key_file_without_create(tmp_path):
    with pytest.raises(ConfigError, match="link-keys"):
        TokenCodec.from_config(config_for(tmp_path), create=False)
    assert not (tmp_path / "state").exists()


def test_concurrent_threads_share_one_key(tmp_path):
    for attempt in range(5):
        config = config_for(tmp_path / str(attempt))
        barrier = threading.Barrier(8)
        codecs = []

        def start(config=config, barrier=barrier, codecs=codecs):
            barrier.wait()
            codecs.append(TokenCodec.from_config(config))

        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({codec.encode(CLICK) for codec in codecs}) == 1
        assert os.listdir(tmp_path / str(attempt) / "state") == ["link-keys"]


def test_concurrent_processes_share_one_key(tmp_path):
    package_root = Path(tokens.__file__).resolve().parents[1]
    script = (
        "import sys, time\n"
        "from smtpapi_milter.config import Config\n"
        "from smtpapi_milter.tokens import TokenCodec, TrackingData\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "codec = TokenCodec.from_config(Config(state_dir=sys.argv[1]))\n"
        "print(codec.encode(TrackingData('open', 't', 'm', 'r', 1)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    start_at = str(time.time() + 1.5)
    state = str(tmp_path / "state")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, state, start_at], stdout=subprocess.PIPE, env=env
        )
        for _ in range(6)
    ]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(set(outputs)) == 1
    assert os.listdir(state) == ["link-keys"]


def test_creator_that_loses_the_race_uses_the_existing_key(tmp_path):
    path = tmp_path / "link-keys"
    existing = generate_key()
    path.write_text(existing + "\n")
    path.chmod(0o600)
    keys = tokens._create_key_file(path)
    assert path.read_text() == existing + "\n"
    assert keys == [tokens._parse_key(existing, "test")]
    assert os.listdir(tmp_path) == ["link-keys"]


@pytest.mark.parametrize("bits", [0o640, 0o620, 0o604, 0o602])
def test_key_file_open_to_group_or_others_is_refused(tmp_path, bits):
    config = config_for(tmp_path)
    TokenCodec.from_config(config)
    key_file = tmp_path / "state" / "link-keys"
    key_file.chmod(bits)
    with pytest.raises(ConfigError, match=str(key_file)):
        TokenCodec.from_config(config)
    other = tmp_path / "other-keys"
    other.write_text(generate_key() + "\n")
    other.chmod(bits)
    with pytest.raises(ConfigError, match=str(other)):
        TokenCodec.from_config(config_for(tmp_path, key_file=str(other)))


def test_bad_configured_key_names_file_and_index(tmp_path):
    good = generate_key()
    short = "k2:" + b64(b"x" * 16)
    with pytest.raises(ConfigError) as caught:
        TokenCodec.from_config(config_for(tmp_path, keys=[good, short]))
    assert str(caught.value) == (
        "/etc/x.toml: 'engagement_tracker.keys[1]' is not base64url of 32 bytes"
    )
    for bad in ["k2:" + "!" * 43, "k2:" + b64(KEY_A) + "A", "bad id:" + b64(KEY_A)]:
        with pytest.raises(ConfigError, match=r"'engagement_tracker\.keys\[0\]'") as caught:
            TokenCodec.from_config(config_for(tmp_path, keys=[bad]))
        assert bad.split(":")[1] not in str(caught.value)


def test_configured_keys_then_key_file(tmp_path):
    old_line, new_line = generate_key(), generate_key()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotated out 2026-01\n\n  {old_line}  \n")
    key_file.chmod(0o600)
    codec = TokenCodec.from_config(config_for(tmp_path, keys=[new_line], key_file=str(key_file)))
    assert codec.key_ids == (new_line.split(":")[0], old_line.split(":")[0])
    old = TokenCodec.from_config(config_for(tmp_path, key_file=str(key_file)))
    assert codec.decode(old.encode(CLICK)) == CLICK
    assert not (tmp_path / "state").exists()


def test_key_file_errors_name_the_file(tmp_path):
    key_file = tmp_path / "keys"
    cases = {
        f"{generate_key()}\nnot-a-key\n": f"{key_file}: line 2",
        "# only a comment\n": f"{key_file}: key file holds no keys",
        f"{generate_key().replace(':', ':%')}\n": f"{key_file}: line 1",
    }
    for text, message in cases.items():
        key_file.write_text(text)
        key_file.chmod(0o600)
        with pytest.raises(ConfigError, match=message):
            TokenCodec.from_config(config_for(tmp_path, key_file=str(key_file)))
    with pytest.raises(ConfigError, match=r"/etc/x.toml: 'engagement_tracker.key_file'"):
        TokenCodec.from_config(config_for(tmp_path, key_file=str(tmp_path / "missing")))


def test_duplicate_key_ids_are_a_config_error(tmp_path):
    line = generate_key()
    with pytest.raises(ConfigError, match="/etc/x.toml"):
        TokenCodec.from_config(config_for(tmp_path, keys=[line, line]))


def test_generate_key_is_usable():
    line = generate_key()
    kid, secret = line.split(":")
    assert len(raw_bytes(secret)) == 32
    codec = TokenCodec([tokens._parse_key(line, "test")])
    assert codec.key_ids == (kid,)
    assert generate_key() != line


def test_kind_codes_are_frozen():
    """Tokens in sent mail name their kind by position: a reorder would turn one kind into
    another (an old open pixel into an unsubscribe)."""
    assert tokens._KINDS == ("click", "open", "initial_open", "unsubscribe")
    unsubscribe = dataclasses.replace(OPEN, kind="unsubscribe")
    assert CODEC.decode(CODEC.encode(unsubscribe)).kind == "unsubscribe"


_ANY_TEXT = st.text(st.characters(blacklist_categories=()))  # lone surrogates too


@settings(max_examples=500)
@given(_ANY_TEXT.filter(bool), _ANY_TEXT, st.booleans())
def test_link_fields_are_what_the_json_encoder_writes(url, name, unsubscribe):
    # ClickTokens writes a link's own fields with the string encoder alone (faster): the
    # payload must stay byte for byte what the JSON encoder makes of the same array.
    own = [url, name, 1] if unsubscribe else [url, name] if name else [url]
    assert tokens._link_fields(url, name, unsubscribe) == tokens._dumps(own)[1:]


@settings(max_examples=300)
@given(
    tracking_data,
    st.sampled_from([{}, *BAD_FIELDS, {"customer_id": 42}]),
)
def test_shared_fields_are_those_of_any_click_array(data, change):
    # ClickTokens builds the head's fields itself rather than through a copy of the base.
    base = dataclasses.replace(data, **change)
    try:
        want = tokens._to_array(dataclasses.replace(base, kind="click", target_url="-"))
    except ValueError:
        with pytest.raises(ValueError):
            tokens._shared_fields(base)
    else:
        assert tokens._shared_fields(base) == want[: tokens._SHARED]
