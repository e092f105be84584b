"""Property tests of the whole rewrite engine: generated documents, judged by the oracle.

Documents are built from the fragments real mail is made of (links with entities, comments,
Outlook conditionals, style blocks, stray '<' and '&', non-ASCII), wrapped in every transfer
encoding; whatever is generated, the rewrite must be faithful and complete.
"""

from __future__ import annotations

import html

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
