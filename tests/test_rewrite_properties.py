"""Property tests of the whole rewrite engine: generated documents, judged by the oracle.

Documents are built from the fragments real mail is made of (links with entities, comments,
Outlook conditionals, style blocks, stray '<' and '&', non-ASCII), wrapped in every transfer
encoding; whatever is generated, the rewrite must be faithful and complete.
"""

from __future__ import annotations

import html
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpapi_milter.cli import rewrite_bytes
from smtpapi_milter.config import parse_config
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .oracle import judge

CODEC = TokenCodec([("prop", bytes(range(32)))])
PIPELINE = Pipeline(parse_config({"state_dir": "/nonexistent"}), codec=CODEC)

url_paths = st.text(
    alphabet=st.sampled_from("abcXYZ019-._~!$'()*+,;=:@/?&%é😀"), min_size=0, max_size=30
)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["example.com", "www.example.org:8443", "xn--bcher-kva.example"]),
    url_paths,
)


def link(url: str, quote: str, extra: str) -> str:
    value = html.escape(url, quote=True)
    return f"<a {extra}href={quote}{value}{quote}>text &amp; more</a>"


fragments = st.one_of(
    st.builds(
        link,
        urls,
        st.sampled_from(['"', "'"]),
        st.sampled_from(["", 'class="x" ', 'data-msys-linkname="n" ', "TITLE=t "]),
    ),
    st.sampled_from(
        [
            "<p>Hello</p>",
            '<!-- <a href="https://c.example/">x</a> -->',
            "&nbsp;",
            "<br>",
            '<!--[if mso]><v:roundrect href="https://v.example/"></v:roundrect><![endif]-->',
            "<style>a[href^='http']{}</style>",
            "a < b & c > d",
            '<img src="https://i.example/">',
            '<a href="mailto:x@example.com">m</a>',
            '<a href="#top">t</a>',
            "\r\n",
            "  \t",
            "<table><tr><td>é ü 😀</td></tr></table>",
            '<a href="{{url}}">t</a>',
            '<area href="https://area.example/x">',
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&\0"),
        max_size=40,
    ),
)
documents = st.builds(
    lambda parts, body: (
        ("<html><body>" if body else "") + "".join(parts) + ("</body></html>" if body else "")
    ),
    st.lists(fragments, max_size=12),
    st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.sampled_from(["quoted-printable", "base64", "8bit"]))
def test_any_document_is_rewritten_faithfully(document, cte):
    message = corpus.wrap_html(document.encode("utf-8"), cte)
    judge(message, rewrite_bytes(PIPELINE, message, rcpt="jane@example.org"), CODEC)


def sender_qp(data: bytes, rnd: random.Random, eol: bytes) -> bytes:
    """``data`` in quoted-printable as some sender might write it: escapes where none are
    needed, lower-case hex, soft breaks anywhere between escapes (inside hrefs too), lines of
    any length, empty soft-broken lines, literal trailing blanks, a soft break at the end."""
    out = []
    for line in data.split(b"\r\n"):
        limit = rnd.choice([rnd.randint(1, 76), 76, 200])
        width = 0
        for byte in line:
            unit = _unit(byte, rnd)
            if width + len(unit) >= limit or rnd.random() < 0.02:
                out.append(b"=" + eol)
                width = 0
            out.append(unit)
            width += len(unit)
        out.append(eol)
    encoded = b"".join(out)[: -len(eol)]  # the last line break belongs to the delimiter
    return encoded + b"=" if rnd.random() < 0.2 else encoded


def _unit(byte: int, rnd: random.Random) -> bytes:
    plain = 33 <= byte <= 126 and byte != ord("=") or byte in b" \t"
    if plain and rnd.random() > 0.05:
        return bytes([byte])
    escape = b"=%02X" % byte
    return escape.lower() if rnd.random() < 0.2 else escape


def qp_message(html: bytes, rnd: random.Random, eol: bytes) -> bytes:
    def part(ctype: bytes, data: bytes) -> bytes:
        return (
            (
                b"--b\r\nContent-Type: " + ctype + b"; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).replace(b"\r\n", eol)
            + sender_qp(data.replace(b"\n", b"\r\n"), rnd, eol)
            + eol
        )

    head = corpus.headers() + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    return (
        head.replace(b"\r\n", eol)
        + part(b"text/plain", corpus.text_version(html).replace(b"\r\n", b"\n"))
        + part(b"text/html", html.replace(b"\r\n", b"\n"))
        + b"--b--"
        + eol
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.randoms(use_true_random=False), st.sampled_from([b"\r\n", b"\n"]))
def test_sender_quoted_printable_lines_are_kept_where_nothing_changed(document, rnd, eol):
    # The oracle holds every untouched encoded line of a quoted-printable part to be
    # delivered byte for byte; here the encoding is the sender's own, however odd.
    message = qp_message(document.encode("utf-8"), rnd, eol)
    out = rewrite_bytes(PIPELINE, message, rcpt="jane@example.org")
    judge(message, out, CODEC)
