"""Reusing the previous copy's HTML scan (rewrite/merge_reuse.py) gives exactly a full scan.

Mail-merged copies differ in a few spans; the reuse copies the earlier scan's steps where
the texts agree and scans the rest. Whatever the edit, the result must equal
``scan_html`` of the new text: on the corpus with names, per-reader links and inserted or
deleted spans, and by hypothesis on random edits of corpus and generated HTML.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.rewrite import merge_reuse
from smtpapi_milter.rewrite.analysis import AnalysisCache
from smtpapi_milter.rewrite.html import scan_html
from smtpapi_milter.settings import TrackingSettings

from . import corpus

# Opens and clicks tracked everywhere, no expiry: the settings the reuse tests compare under.
TRACK_ALL = TrackingSettings(
    open_tracking=True,
    click_tracking=True,
    open_scheme="https",
    click_scheme="https",
    tracking_domain="t.example.com",
    link_expiry=0,
    initial_open_pixel=False,
    click_tracking_text=True,
    skip_url_text_links=False,
)

# Pieces that open, close or hide markup: an edit made of them moves every boundary.
PIECES = [
    '<a href="https://www.example.com/account?u=1&amp;s=2">',
    "<a href='https://x.example/p/9'>",
    "</a>",
    "<!--",
    "-->",
    "--!>",
    "<!--[if mso]>",
    "<!--[if !mso]><!-->",
    "<![endif]-->",
    "<![endif]>",
    "<style>",
    "</style>",
    "<script>",
    "</script>",
    "<title>",
    "</title>",
    "<body>",
    '<body class="x">',
    "</body>",
    "<html>",
    "</html>",
    "</head>",
    "<!DOCTYPE html>",
    '<base href="https://base.example/">',
    '<area href="https://area.example/">',
    '<v:roundrect href="https://vml.example/">',
    '<div class="c">',
    "</div>",
    "<",
    ">",
    '"',
    "'",
    "=",
    " ",
    "\n",
    "Jane Doe",
    "Zoë Ångström 🎉",
    "https://www.example.com/",
    "&amp;",
    "</",
    "<!",
    "<?x",
    "<a href=https://bare.example/x>",
]


def templates() -> list[str]:
    return [
        corpus.realistic(path.read_bytes()).decode("utf-8", "surrogateescape")
        for path in corpus.html_files()
    ]


def reused(old: str, new: str, max_links: int | None = None):
    _, trace = merge_reuse.scan(old)
    assert trace is not None
    return merge_reuse.scan(new, max_links, trace)[0]


def merged_copy(html: str, reader: int) -> str:
    """A reader's copy: greeting after <body>, own links before </body>, name in between."""
    body = html.find(">", html.lower().find("<body")) + 1
    end = html.lower().rfind("</body>")
    if body <= 0 or end < body:
        return f"<p>Hi reader {reader}</p>" + html
    middle = (body + end) // 2
    return (
        html[:body]
        + f"<p>Hello Reader {reader},</p>"
        + html[body:middle]
        + f"<span>{'x' * reader}</span>"
        + html[middle:end]
        + f'<a href="https://www.example.com/account?reader={reader}">Account</a>'
        + f'<a href="https://www.example.com/prefs/{reader}">Preferences</a>'
        + html[end:]
    )


@corpus.needed
def test_traced_scan_is_the_scan_on_the_corpus():
    for text in templates():
        scan, trace = merge_reuse.scan(text)
        assert scan == scan_html(text)
        assert trace is not None and trace.text == text


@corpus.needed
def test_mail_merged_copies_of_every_template_scan_as_a_full_scan():
    for text in templates():
        seed = merge_reuse.scan(merged_copy(text, 1))[1]
        for reader in (2, 13, 400):
            new = merged_copy(text, reader)
            assert merge_reuse.scan(new, None, seed)[0] == scan_html(new)


@corpus.needed
def test_random_span_edits_on_the_corpus():
    rnd = random.Random(20)
    for text in templates():
        for _ in range(12):
            new = text
            for _ in range(rnd.randint(1, 4)):
                start = rnd.randrange(len(new) + 1)
                stop = min(len(new), start + rnd.randint(0, 40))
                new = new[:start] + rnd.choice(PIECES) + new[stop:]
            for budget in (None, 3):
                assert reused(text, new, budget) == scan_html(new, budget), (start, stop)


@st.composite
def html_and_edit(draw, base: st.SearchStrategy[str]):
    old = draw(base)
    new = old
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(new)))
        stop = draw(st.integers(start, min(len(new), start + 60)))
        insert = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=4)))
        new = new[:start] + insert + new[stop:]
    return old, new


generated = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_and_edit(generated), st.sampled_from([None, 0, 1, 4]))
def test_random_edits_of_generated_html(texts, budget):
    old, new = texts
    assert reused(old, new, budget) == scan_html(new, budget)


_CORPUS_TEXTS = templates() if corpus.available() else ["<p>x</p>"]


@corpus.needed
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_and_edit(st.sampled_from(_CORPUS_TEXTS)))
def test_random_edits_of_corpus_templates(texts):
    old, new = texts
    assert reused(old, new) == scan_html(new)


@corpus.needed
def test_reuse_scans_only_around_the_changes(monkeypatch):
    text = max(templates(), key=len)
    steps = []
    real = merge_reuse._TracingScanner.step

    def counted(self, pos):
        steps.append(pos)
        return real(self, pos)

    monkeypatch.setattr(merge_reuse._TracingScanner, "step", counted)
    _, seed = merge_reuse.scan(merged_copy(text, 1))
    full = len(steps)
    steps.clear()
    new = merged_copy(text, 2)
    assert merge_reuse.scan(new, None, seed)[0] == scan_html(new)
    assert full > 30
    assert len(steps) * 3 < full  # three changed spans, a few steps each


def test_no_trace_kept_past_the_link_budget():
    text = "".join(f'<a href="https://example.com/{i}">x</a>' for i in range(50))
    scan, trace = merge_reuse.scan(text, 10)
    assert trace is None
    assert scan == scan_html(text, 10)
    assert scan.links_beyond == 40


@corpus.needed
def test_the_cache_reuses_the_last_body_and_plans_as_without_it():
    """Through the analysis cache, copy after copy: every plan as a fresh analysis makes."""
    html = max(templates(), key=len)
    settings = TRACK_ALL
    reusing, fresh = AnalysisCache(), AnalysisCache(reuse_similar=False)
    for reader in range(6):
        data = corpus.wrap_html(merged_copy(html, reader).encode(), "quoted-printable")
        message = parse_message_file(data)
        ours = reusing.get(message.headers, message.body)[0]
        theirs = fresh.get(message.headers, message.body)[0]
        assert ours.html is not None and theirs.html is not None
        assert (ours.html._seed is not None) == (reader > 0)
        assert ours.html.plan(settings) == theirs.html.plan(settings)
        assert ours.html._html_scan == theirs.html._html_scan
        assert ours.html._seed is None  # used once, not kept
        assert ours.html._trace is not None


@pytest.mark.parametrize("reuse", [True, False])
def test_a_cache_without_html_parts_never_seeds(reuse):
    cache = AnalysisCache(reuse_similar=reuse)
    headers = [("Content-Type", b"text/plain")]
    assert cache.get(headers, b"hello https://example.com/\r\n")[0].html is None
    assert cache._seed() is None
