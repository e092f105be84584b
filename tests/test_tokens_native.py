"""The C token minter (_native/tokenmint.c) against the pure-Python reference in tokens.py:
the same token bytes for every input, since mail already sent must keep decoding with any
decoder (the C opener is held to the reference in test_tokens_open_native.py)."""

import base64
import dataclasses
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpapi_milter import tokens
from smtpapi_milter.rewrite.html import scan_html
from smtpapi_milter.rewrite.urls import MAX_URL_BYTES
from smtpapi_milter.tokens import TokenCodec, TrackingData
from tests import corpus
from tests.test_tokens import (
    CLICK,
    DEFLATE_EDGES,
    INCOMPRESSIBLE,
    KEY_A,
    KEY_B,
    OPEN,
    TINY,
    deflate_pieces,
    json_values,
)

if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":  # the references alone are under test
    pytest.skip("SMTPAPI_PURE_PYTHON=1: no native path to compare", allow_module_level=True)


KEYS = [("k1", KEY_A), ("older", KEY_B)]


def pure_codec(keys=KEYS) -> TokenCodec:
    saved = tokens._tokenmint
    tokens._tokenmint = None
    try:
        return TokenCodec(keys)
    finally:
        tokens._tokenmint = saved


NATIVE = TokenCodec(KEYS)
PURE = pure_codec()

# Every code point, lone surrogates and C0 controls included: the C side writes the JSON
# escapes and the surrogatepass UTF-8 itself.
texts = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
tracking_data = st.builds(
    TrackingData,
    kind=st.sampled_from(["click", "open", "initial_open", "unsubscribe"]),
    transmission_id=texts,
    message_id=texts,
    rcpt_to=texts,
    injection_time=st.integers(0, 2**40),
    expires=st.integers(0, 2**40),
    campaign_id=texts,
    tags=st.lists(texts, max_size=4).map(tuple),
    metadata=st.none() | st.dictionaries(texts, json_values, max_size=4),
    customer_id=texts,
    target_url=texts,
    link_name=texts,
    unsubscribe=st.booleans(),
)
links = st.lists(st.tuples(texts, texts, st.booleans()), max_size=6)


def test_native_path_is_built_and_chosen():
    # The build is mandatory (pip install -e . compiles it): a silent fallback would hide
    # a broken build behind slower mail.
    assert tokens._tokenmint is not None
    assert NATIVE._minter is not None and PURE._minter is None


def test_pure_python_switch_forces_the_reference():
    code = "from smtpapi_milter import tokens; print(tokens._tokenmint is None)"
    env = dict(os.environ, SMTPAPI_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("data", [CLICK, OPEN, TINY, INCOMPRESSIBLE])
def test_fixed_cases_match(data):
    assert NATIVE.encode(data) == PURE.encode(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(tracking_data)
def test_encode_matches_reference(data):
    assert NATIVE.encode(data) == PURE.encode(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tracking_data, links)
def test_click_tokens_match_reference(base, copy_links):
    native, pure = NATIVE.click_tokens(base), PURE.click_tokens(base)
    for url, name, unsubscribe in copy_links:
        token = native.encode(url, name, unsubscribe)
        assert token == pure.encode(url, name, unsubscribe)
        want = dataclasses.replace(
            base, kind="click", target_url=url, link_name=name, unsubscribe=unsubscribe
        )
        assert PURE.decode(token) == want


def open_token(token: str, key: bytes = KEY_A) -> bytes:
    """The plaintext in one of our tokens, opened without the codec."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    end = 2 + raw[1]
    plain = AESSIV(key).decrypt(raw[end:], [raw[:end]])
    return tokens._inflate(plain) if raw[0] == tokens.VERSION_DEFLATE else plain


def pure_click(head: bytes, url: str, name: str, unsubscribe: bool) -> str:
    tail = tokens._link_fields(url, name, unsubscribe).encode("utf-8", "surrogatepass")
    return PURE._seal(head + tail, tokens._HeadDeflater(head).deflate(tail))


@pytest.mark.parametrize("plain", DEFLATE_EDGES, ids=range(len(DEFLATE_EDGES)))
def test_deflate_edges_match_reference(plain):
    # The chain cap, the 258 limit, the 32768-byte reach, the plaintext's end.
    token = NATIVE._minter.mint(plain)
    assert token == PURE._seal(plain, tokens._NO_HEAD.deflate(plain))
    assert open_token(token) == plain
    for cut in (0, 1, 2, 3, len(plain) // 2, len(plain) - 3, len(plain) - 1):
        if 0 <= cut <= len(plain):
            head, rest = plain[:cut], plain[cut:].decode("latin-1")
            token = NATIVE._minter.head(head).click(rest or "x", "", False)
            assert token == pure_click(head, rest or "x", "", False)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600) | deflate_pieces)
def test_any_payload_matches_reference(plain):
    token = NATIVE._minter.mint(plain)
    assert token == PURE._seal(plain, tokens._NO_HEAD.deflate(plain))
    assert open_token(token) == plain


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | deflate_pieces, texts, texts, st.booleans())
def test_any_head_and_link_match_reference(head, url, name, unsubscribe):
    # Heads of any bytes (the C side parses them once, up to where a tail could change the
    # symbols); links of any text, empty names, the unsubscribe flag.
    token = NATIVE._minter.head(head).click(url, name, unsubscribe)
    if not url:
        assert token is None  # tokens.py takes the long way
        return
    assert token == pure_click(head, url, name, unsubscribe)
    tail = tokens._link_fields(url, name, unsubscribe).encode("utf-8", "surrogatepass")
    assert open_token(token) == head + tail


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=300), st.integers(0, MAX_URL_BYTES), st.booleans())
def test_urls_near_the_rewrite_bound_match_reference(text, cut, unsubscribe):
    # The rewrite tracks URLs of up to MAX_URL_BYTES bytes: repeated text up to that, and
    # reversed after ``cut`` (long stretches that repeat, then none that do).
    url = "https://www.example.com/" + text * (MAX_URL_BYTES // len(text))
    url = url.encode("utf-8", "surrogatepass")[:MAX_URL_BYTES].decode("utf-8", "ignore")
    url = url[:cut] + url[cut:][::-1]
    native, pure = NATIVE.click_tokens(CLICK), PURE.click_tokens(CLICK)
    token = native.encode(url, "", unsubscribe)
    assert token == pure.encode(url, "", unsubscribe)
    want = dataclasses.replace(CLICK, target_url=url, link_name="", unsubscribe=unsubscribe)
    assert PURE.decode(token) == want


@pytest.mark.parametrize("size", [1 << 10, 1 << 16, 1 << 20])
def test_long_and_incompressible_urls_match(size):
    # Long input grows the C buffers; random bytes make the deflate lose (raw payload), with
    # the C parse stopped at the plaintext's length.
    clicks_n, clicks_p = NATIVE.click_tokens(CLICK), PURE.click_tokens(CLICK)
    repetitive = "https://example.com/" + "a/" * size
    random = "https://example.com/" + os.urandom(size).hex()
    for url in (repetitive, random):
        assert clicks_n.encode(url, "n", True) == clicks_p.encode(url, "n", True)


def test_bad_fields_raise_like_the_reference():
    for codec in (NATIVE, PURE):
        clicks = codec.click_tokens(OPEN)
        for bad in [(None, "", False), ("u", None, False), ("u", "", 1), (b"u", "", False)]:
            with pytest.raises(ValueError):
                clicks.encode(*bad)


def test_minter_refuses_bad_keys():
    with pytest.raises(ValueError):
        tokens._tokenmint.Minter(b"short", b"k1", tokens.ZDICT_V1)
    with pytest.raises(ValueError):
        tokens._tokenmint.Minter(KEY_A, b"", tokens.ZDICT_V1)


def test_one_head_many_links_keeps_matching():
    # Each token starts from the head's state (its tail's positions are taken out of the
    # chains again), never from the last token's.
    native, pure = NATIVE.click_tokens(CLICK), PURE.click_tokens(CLICK)
    for i in range(200):
        url = f"https://www.example.com/{i}?utm_source=email&utm_medium=email"
        assert native.encode(url, "", i % 3 == 0) == pure.encode(url, "", i % 3 == 0)


@corpus.needed
def test_corpus_links_match_reference():
    checked = 0
    for path in corpus.html_files():
        html = path.read_bytes().decode("utf-8", "surrogateescape")
        native, pure = NATIVE.click_tokens(CLICK), PURE.click_tokens(CLICK)
        for link in scan_html(html).links:
            name = link.name or ""
            assert native.encode(link.url, name, link.unsubscribe) == pure.encode(
                link.url, name, link.unsubscribe
            )
            checked += 1
    assert checked > 500  # 667 in the corpus of 2026-12


@pytest.mark.parametrize("size", [32, 48, 64])
def test_seals_built_from_cbc_and_ctr_are_aes_siv(size):
    # The C side builds AES-SIV from AES-CBC (CMAC) and AES-CTR; it checks itself against
    # OpenSSL's AES-SIV at start (fast_siv), and cryptography's AESSIV must open its seals.
    key = bytes(range(7, 7 + size))
    minter = tokens._tokenmint.Minter(key, b"kid", tokens.ZDICT_V1)
    assert minter.fast_siv == 1
    for plain in (b"[1]", b"x" * 15, b"y" * 16, b"z" * 17, b'["' + b"https://a.example/" * 20):
        raw = base64.urlsafe_b64decode(minter.mint(plain) + "==")
        header, sealed = raw[:5], raw[5:]
        assert header[1:] == b"\x03kid"
        opened = AESSIV(key).decrypt(sealed, [header])
        assert opened == plain or tokens._inflate(opened) == plain
