"""Seed inputs for each fuzz target, made at run time from ../shared/corpus (never copied).

Seeds start the fuzzer in the interesting part of the input space: real messages and
templates for the pipeline and the HTML scanner, documented X-MSYS-API values for the header
parser, real tokens for the decoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from smtpapi_milter.tokens import TokenCodec, TrackingData

from .. import corpus

# Fuzz inputs start with one mode byte (see fuzz_pipeline.MODES); the seed sets it.
TRACKED, UNTRACKED, AS_IS = b"\x00", b"\x01", b"\x02"
FUZZ_KEY = ("fuzz", bytes(range(32)))


def pipeline_seeds() -> Iterator[bytes]:
    """Corpus MIME files as they are and wrapped HTML templates, in every mode."""
    for path in corpus.mime_files():
        message = corpus.with_header(path.read_bytes(), b"")
        yield TRACKED + message
        yield UNTRACKED + message
    for path in corpus.html_files()[::4]:  # every fourth: the scanner target has them all
        for cte in ("quoted-printable", "base64", "8bit"):
            yield AS_IS + corpus.wrap_html(corpus.realistic(path.read_bytes()), cte)


def html_seeds() -> Iterator[bytes]:
    for path in corpus.html_files():
        yield corpus.realistic(path.read_bytes())


def xmsysapi_seeds() -> Iterator[bytes]:
    yield b'{"campaign_id": "my_awes\r\n   ome_campaign", "tags": ["a", "b"]}'
    yield b'{"metadata": {"k": "v\\u00e9"}, "options": {"open_tracking": true}}'
    yield b"=?utf-8?B?eyJjYW1wYWlnbl9pZCI6ICJjYWbDqSJ9?="
    yield b'=?iso-8859-1?Q?{"campaign=5Fid":_"caf=E9"}?= =?utf-8?q?_?='
    yield b'{"options": {"click_tracking": "false"}, "metadata": []}'
    yield json.dumps({"tags": ["t"] * 12, "metadata": {"n": [1, {"x": None}]}}).encode()


def token_seeds() -> Iterator[bytes]:
    codec = TokenCodec([FUZZ_KEY])
    base = TrackingData("open", "tx1", "m1", "jane@example.org", 1_700_000_000)
    yield codec.encode(base).encode()
    yield codec.encode(
        TrackingData(
            "click",
            "7339104723849202",
            "7339104723849202.0",
            "jane.doe@example.org",
            1_700_000_000,
            1_731_536_000,
            "campaign",
            ("tag1", "tag2"),
            {"user": 42, "name": "Jané"},
            "customer",
            "https://www.example.com/articles/1?utm_source=newsletter&utm_medium=email",
            "read more",
            True,
        )
    ).encode()
    yield b"AQRmdXp6" + b"A" * 40


SEEDS = {
    "pipeline": pipeline_seeds,
    "html": html_seeds,
    "xmsysapi": xmsysapi_seeds,
    "tokens": token_seeds,
}
