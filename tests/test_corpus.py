"""Acceptance over the whole corpus (SPEC 10, 11 "fidelity"): every message, judged by the
independent oracle in ``oracle.py``.

HTML templates are wrapped as multipart/alternative in quoted-printable and base64, and as a
single 8bit part; every MIME fixture gets an X-MSYS-API header turning tracking on.
"""

from __future__ import annotations

import os

import pytest

from smtpapi_milter.cli import rewrite_bytes
from smtpapi_milter.config import parse_config
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .oracle import judge

CODEC = TokenCodec([("corpus", bytes(range(32)))])
PIPELINE = Pipeline(parse_config({"state_dir": "/nonexistent"}), codec=CODEC)
RCPT = "jane.doe@example.org"
# The second reader's copy is built from the analysis the first one left in the cache: both
# must pass the oracle (a fresh analysis and a reused one).
READERS = (RCPT, "second.reader@example.org")


# A clone without the corpus skips this module (one line in the summary, see conftest.py);
# SMTPAPI_REQUIRE_CORPUS=1 turns its absence into a failure, for a CI that must prove fidelity.
pytestmark = corpus.needed if not os.environ.get("SMTPAPI_REQUIRE_CORPUS") else []


def test_corpus_is_present():
    assert len(corpus.html_files()) >= 80 and len(corpus.mime_files()) >= 100, (
        f"corpus not found at {corpus.CORPUS}: set SMTPAPI_CORPUS"
    )


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
@pytest.mark.parametrize("path", corpus.html_files(), ids=lambda p: p.name)
def test_html_template(path, cte):
    for html in (path.read_bytes(), corpus.realistic(path.read_bytes())):
        message = corpus.wrap_html(html, cte)
        for rcpt in READERS:
            judge(message, rewrite_bytes(PIPELINE, message, rcpt=rcpt), CODEC)


@pytest.mark.parametrize("path", corpus.mime_files(), ids=lambda p: p.name)
def test_mime_fixture(path):
    message = corpus.with_header(path.read_bytes())
    for rcpt in READERS:
        corpus.judge_fixture(path, message, rewrite_bytes(PIPELINE, message, rcpt=rcpt), CODEC)


def test_realistic_newsletters_track_every_placeholder():
    total = 0
    for path in corpus.html_files():
        message = corpus.wrap_html(corpus.realistic(path.read_bytes()), "quoted-printable")
        total += judge(message, rewrite_bytes(PIPELINE, message, rcpt=RCPT), CODEC).html_links
    assert total >= 450  # 482 placeholders and real links, measured
