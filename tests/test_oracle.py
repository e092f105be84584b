"""The oracle must be able to fail: each kind of damage it promises to catch, caught."""

import re

import pytest

from smtpapi_milter.cli import rewrite_bytes
from smtpapi_milter.config import parse_config
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.tokens import TokenCodec, TrackingData

from . import corpus
from .oracle import judge

CODEC = TokenCodec([("oracle", bytes(range(32)))])
HTML = (
    b"<html><body><p>Hello &amp; welcome</p>"
    b'<a href="https://example.com/a?x=1&amp;y=2">a</a> <a href="https://example.com/b">b</a>'
    b"</body></html>\r\n"
)


@pytest.fixture(scope="module")
def pair():
    message = corpus.wrap_html(HTML, "8bit")
    pipeline = Pipeline(parse_config({"state_dir": "/x"}), codec=CODEC)
    return message, rewrite_bytes(pipeline, message, rcpt="jane@example.org")


def test_good_rewrite_passes(pair):
    report = judge(*pair, CODEC)
    assert (report.html_links, report.pixels) == (2, 1)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b.replace(b"Hello &amp;", b"Hello &"), "text changed"),
        (lambda b: b.replace(b"<p>", b"<p >"), "text changed"),
        (lambda b: b.replace(b"Corpus_message", b"Korpus_message"), "headers changed"),
        (lambda b: re.sub(rb"<img [^>]*/o/[^>]*/>", b"", b), "no open pixel"),
        (
            lambda b: b.replace(b"</body>", b'<a href="https://example.com/new">n</a></body>'),
            "not tracked|text after a tracked URL changed",
        ),
    ],
)
def test_damage_is_caught(pair, damage, reason):
    before, after = pair
    with pytest.raises(AssertionError, match=reason):
        judge(before, damage(after), CODEC)


def test_untracked_eligible_link_is_caught(pair):
    before, after = pair
    first = re.search(rb"http://localhost:8080/c/[A-Za-z0-9_-]+", after).group(0)
    with pytest.raises(AssertionError):
        judge(before, after.replace(first, b"https://example.com/a?x=1&amp;y=2", 1), CODEC)


def test_token_with_wrong_target_is_caught(pair):
    before, after = pair
    first = re.search(rb"localhost:8080/c/([A-Za-z0-9_-]+)", after).group(1)
    data = CODEC.decode(first.decode())
    forged = CODEC.encode(
        TrackingData(
            **{
                **{n: getattr(data, n) for n in data.__slots__},
                "target_url": "https://evil.example/",
            }
        )
    )
    with pytest.raises(AssertionError, match="token URL|text after a tracked URL changed"):
        judge(before, after.replace(first, forged.encode(), 1), CODEC)


def test_changed_other_part_is_caught():
    message = corpus.wrap_html(HTML, "quoted-printable")
    pipeline = Pipeline(parse_config({"state_dir": "/x"}), codec=CODEC)
    after = rewrite_bytes(pipeline, message, rcpt="jane@example.org")
    preamble = b"This is a multi-part message in MIME format."
    judge(message, after.replace(preamble, preamble.upper()), CODEC)  # preamble: not a part
    text_damaged = after.replace(b"Hello & welcome", b"Hello and welcome", 1)
    assert text_damaged != after
    with pytest.raises(AssertionError):
        judge(message, text_damaged, CODEC)


def test_text_url_ends_at_a_c1_control_like_the_library_says():
    # Found by fuzzing: the library ends a text URL at a C1 control (mail clients break
    # there); the oracle must read the same URL, not one running on through the controls.
    text = "Read http://\x94\x96scover.example/ now\r\n".encode("latin-1")
    message = corpus.headers() + (
        b"Content-Type: text/plain; charset=latin-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + text
    )
    pipeline = Pipeline(parse_config({"state_dir": "/x"}), codec=CODEC)
    judge(message, rewrite_bytes(pipeline, message, rcpt="jane@example.org"), CODEC)


@pytest.mark.parametrize(
    "href",
    [
        # Fuzz findings: the oracle wanted these tracked; the milter, by the README's rules,
        # leaves them (a space or U+FFFD in the user info; UTF-8 bytes a us-ascii part does
        # not decode, which Lexbor would have read as U+0085).
        b"http://www.provantag\x00Delivered-To: xxx@xxx.coyNet?a",
        b"http://a b@x.example/",
        b"http://a\xef\xbf\xbdb@x.example/",
        b"http://x.example/?ref\xc2\x85pr",
    ],
)
def test_links_the_milter_leaves_are_not_asked_for(href):
    html = b'<html><body><a href="' + href + b'">x</a></body></html>\r\n'
    message = corpus.wrap_html(html, "8bit").replace(b"charset=utf-8", b"charset=us-ascii")
    pipeline = Pipeline(parse_config({"state_dir": "/x"}), codec=CODEC)
    out = rewrite_bytes(pipeline, message, rcpt="jane@example.org")
    assert b'href="' + href + b'"' in out
    assert judge(message, out, CODEC).html_links == 0
