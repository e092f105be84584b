"""Messages built from ../shared/corpus, as real senders would send them.

The corpus is read where it lies (never copied into the repo, it is not ours to copy), so a
clone without it runs everything else: the tests that need it are marked ``@corpus.needed``
(or call ``corpus.require()`` where they first read it) and skip with ``SKIP_REASON``, which
tests/conftest.py folds into one summary line. HTML templates are wrapped
into multipart/alternative (quoted-printable or base64) and single-part 8bit messages; the
MIME fixtures get an X-MSYS-API header that turns tracking on.
"""

from __future__ import annotations

import binascii
import os
import re
from pathlib import Path
from typing import Any

import lxml.html
import pytest

CORPUS = Path(
    os.environ.get("SMTPAPI_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
TRACK_ALL = (
    b'X-MSYS-API: {"campaign_id": "corpus", "tags": ["corpus"],\r\n'
    b' "options": {"open_tracking": true, "click_tracking": true}}'
)
_PLACEHOLDER = re.compile(rb'href=(["\'])#\1')
# The start of every corpus skip's reason: conftest.py counts the skips by it.
SKIP_REASON = "needs the corpus (SMTPAPI_CORPUS)"


def html_files() -> list[Path]:
    """The corpus HTML templates; empty without the corpus (``needed`` skips their tests)."""
    return sorted(CORPUS.glob("html/*/*.html"))


def mime_files() -> list[Path]:
    """The corpus MIME fixtures; empty without the corpus (``needed`` skips their tests)."""
    return sorted(p for p in CORPUS.glob("mime/*/*.eml"))


def available() -> bool:
    return bool(html_files()) and bool(mime_files())


# For tests parametrized over the corpus files: skipif wins over the "empty parameter set"
# skip pytest adds by itself, so the reason is ours and the summary counts it.
needed = pytest.mark.skipif(not available(), reason=f"{SKIP_REASON}: none at {CORPUS}")


def require() -> None:
    """Skip the calling test (or fixture) when the corpus is absent."""
    if not available():
        pytest.skip(f"{SKIP_REASON}: none at {CORPUS}")


def realistic(html: bytes) -> bytes:
    """Give each placeholder link a unique, real-looking URL (with &amp; in the query)."""
    counter = iter(range(1, 1_000_000))

    def url(m: re.Match[bytes]) -> bytes:
        n = next(counter)
        return (
            b'href="https://www.example.com/articles/%d?utm_source=newsletter&amp;'
            b'utm_medium=email&amp;utm_campaign=weekly&amp;id=%d"' % (n, n)
        )

    return _PLACEHOLDER.sub(url, html)


def text_version(html: bytes) -> bytes:
    """A plain-text alternative like senders make: the words, then the links."""
    try:
        doc = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return b"(no text)\r\n"
    words = " ".join(doc.text_content().split())
    links = [h for h in doc.xpath("//a/@href") if h.startswith(("http://", "https://"))]
    lines = [words[i : i + 72] for i in range(0, min(len(words), 2000), 72)]
    return ("\r\n".join(lines + [""] + links) + "\r\n").encode("utf-8")


def encode(data: bytes, cte: str) -> bytes:
    """The part body in ``cte``, ending with CRLF so the next delimiter starts a line."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if cte == "quoted-printable":
        return binascii.b2a_qp(data.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", b"\r\n")
    if cte == "base64":
        raw = binascii.b2a_base64(data, newline=False)
        return b"\r\n".join(raw[i : i + 76] for i in range(0, len(raw), 76)) + b"\r\n"
    return data


def headers(extra: bytes = TRACK_ALL) -> bytes:
    # No Return-Path: the MTA writes it at delivery (Postfix drops one a sender supplies).
    return (
        b"From: Example News <news@example.com>\r\n"
        b"To: Jane Doe <jane.doe@example.org>\r\n"
        b"Subject: =?utf-8?q?Corpus_message_=E2=9C=93?=\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <corpus.1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n" + (extra + b"\r\n" if extra else b"")
    )


def wrap_html(html: bytes, cte: str, extra: bytes = TRACK_ALL) -> bytes:
    """A message carrying ``html``: multipart/alternative for qp/base64, single part for 8bit."""
    if cte == "8bit":
        return (
            headers(extra)
            + b"Content-Type: text/html; charset=utf-8\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            + encode(html, cte)
        )
    boundary = b"=_corpus_boundary_42"
    return (
        headers(extra)
        + b'Content-Type: multipart/alternative; boundary="'
        + boundary
        + b'"\r\n\r\n'
        + b"This is a multi-part message in MIME format.\r\n\r\n"
        + b"--"
        + boundary
        + b"\r\n"
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + encode(text_version(html), cte)
        + b"--"
        + boundary
        + b"\r\n"
        + b"Content-Type: text/html; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + encode(html, cte)
        + b"--"
        + boundary
        + b"--\r\n"
    )


def with_header(message: bytes, extra: bytes = TRACK_ALL) -> bytes:
    """A corpus MIME file as the MTA would see it, with ``extra`` as its first header."""
    if message.startswith(b"From "):  # mbox envelope line: never on the wire
        message = message.split(b"\n", 1)[1]
    eol = b"\r\n" if b"\r\n" in message[:2000] else b"\n"
    return extra.replace(b"\r\n", eol) + eol + message if extra else message


# MIME fixtures the milter must deliver without tracking, and why (each is checked to
# come out byte-identical apart from the X-MSYS-API removal).
UNTRACKED = {
    # Unknown transfer encodings everywhere are opaque (RFC 2045 6.4): never guess and
    # mangle. (A message with only some such parts is judged part by part by the oracle.)
    "error_emails__content_transfer_encoding_spam.eml",
    "error_emails__content_transfer_encoding_text-html.eml",
    "error_emails__content_transfer_encoding_x_uuencode.eml",
    "error_emails__content_transfer_encoding_plain.eml",
}


def judge_fixture(path: Path, message: bytes, out: bytes, codec: Any) -> None:
    """Judge the rewrite of MIME fixture ``path`` (``message`` is it with_header()).

    Fixtures that must pass untouched (UNTRACKED, or already DKIM-signed) must come out
    byte-identical apart from the X-MSYS-API removal; every other one goes to the oracle.
    """
    from .oracle import judge

    if path.name in UNTRACKED or b"\nDKIM-Signature:" in message.split(b"\n\r\n")[0]:
        assert out == with_header(path.read_bytes(), b""), f"{path.name} was changed"
        return
    judge(message, out, codec)
