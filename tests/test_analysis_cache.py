"""The body analysis cache: one newsletter, one analysis, a copy per reader (rewrite/analysis).

A hit must give each reader exactly what a fresh analysis would: their own tokens in the
same places. What decides the MIME tree (the Content-* fields) is part of the key, the
settings that decide where links go pick the plan, and the cache stays within its bounds.
"""

from __future__ import annotations

import dataclasses
import email
import re

import pytest

from smtpapi_milter.cli import rewrite_bytes
from smtpapi_milter.config import ConfigError, parse_config
from smtpapi_milter.context import Variables
from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.rewrite import track
from smtpapi_milter.rewrite.analysis import PLANS_PER_PART, AnalysisCache
from smtpapi_milter.rewrite.track import TrackStats
from smtpapi_milter.settings import TagRegistry, resolve

from . import corpus
from .oracle import TRACKED, judge
from .test_merge_reuse import templates
from .test_pipeline import CODEC, single
from .test_qp_reuse import SETTINGS as MERGE_SETTINGS

NEWSLETTER = (
    "<html><body><p>Caf\u00e9 news</p>"
    + "".join(
        f'<p><a href="https://example.com/a/{n}?x=1&amp;y=2">item {n}</a></p>' for n in range(30)
    )
    + "</body></html>"
)
TOKEN = re.compile(r"/[coi]/[A-Za-z0-9_-]+")
NO_CLICKS = b'X-MSYS-API: {"options": {"open_tracking": true, "click_tracking": false}}\r\n'


def pipeline(**milter) -> Pipeline:
    return Pipeline(parse_config({"state_dir": "/nonexistent", "milter": milter}), codec=CODEC)


def decoded(out: bytes) -> str:
    """The (single-part) message's body without its transfer encoding."""
    return email.message_from_bytes(out).get_payload(decode=True).decode("utf-8")


def readers(out: bytes) -> set[str]:
    """Whom the tracked links in the (single-part) message ``out`` name."""
    return {CODEC.decode(token).rcpt_to for token in TRACKED.findall(decoded(out))}


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_each_reader_of_one_body_gets_their_own_links_from_one_analysis(cte):
    tracker = pipeline()
    message = single(NEWSLETTER, cte)
    outs = [rewrite_bytes(tracker, message, rcpt=f"reader{n}@example.org") for n in range(3)]
    assert (tracker.analyses.misses, tracker.analyses.hits) == (1, 2)
    for n, out in enumerate(outs):
        assert judge(message, out, CODEC).html_links == 30
        assert readers(out) == {f"reader{n}@example.org"}


def test_a_hit_gives_what_a_fresh_analysis_gives():
    message = single(NEWSLETTER, "quoted-printable")
    cached, uncached = pipeline(), pipeline(analysis_cache=0)
    for _ in range(2):
        one = rewrite_bytes(cached, message, rcpt="jane@example.org")
        two = rewrite_bytes(uncached, message, rcpt="jane@example.org")
        # Tokens differ (each copy has its own transmission id); their places do not.
        assert TOKEN.sub("T", decoded(one)) == TOKEN.sub("T", decoded(two))
        judge(message, one, CODEC)
    assert cached.analyses.hits == 1 and uncached.analyses.hits == 0


def test_the_content_type_is_part_of_the_key():
    tracker = pipeline()
    html = single(NEWSLETTER)
    plain = html.replace(b"Content-Type: text/html", b"Content-Type: text/plain")
    assert judge(html, rewrite_bytes(tracker, html, rcpt="a@example.org"), CODEC).pixels == 1
    out = rewrite_bytes(tracker, plain, rcpt="a@example.org")
    assert tracker.analyses.misses == 2
    # As text, the same bytes have no pixel and no <a>: only the bare URLs are tracked.
    assert b"<img" not in out.split(b"\r\n\r\n", 1)[1] and readers(out) == {"a@example.org"}


def test_settings_that_move_links_get_their_own_plan():
    tracker = pipeline()
    tracked = rewrite_bytes(tracker, single(NEWSLETTER), rcpt="a@example.org")
    untracked_links = rewrite_bytes(tracker, single(NEWSLETTER, header=NO_CLICKS), rcpt="b@x.org")
    assert tracker.analyses.hits == 1  # the X-MSYS-API field is no part of the body
    assert readers(tracked) == {"a@example.org"} and not TRACKED.search(
        untracked_links.decode("latin-1")
    )
    assert judge(single(NEWSLETTER, header=NO_CLICKS), untracked_links, CODEC, clicks=False)


def test_mail_that_tracks_nothing_is_never_analysed():
    tracker = pipeline()
    plain = single(NEWSLETTER, header=b"")
    assert rewrite_bytes(tracker, plain, rcpt="a@example.org") == plain
    assert tracker.analyses.hits == tracker.analyses.misses == 0


def test_the_result_says_whether_the_analysis_was_reused():
    tracker = pipeline()
    message = single(NEWSLETTER)
    session = tracker.session()
    seen = []
    for rcpt in ("a@example.org", "b@example.org"):
        session.mail_from("news@example.com")
        session.rcpt(rcpt)
        headers, body = message.split(b"\r\n\r\n", 1)
        fields = [tuple(f.split(b": ", 1)) for f in headers.split(b"\r\n")]
        result = session.end_of_message([(n.decode(), v) for n, v in fields], body)
        seen.append(result.analysis)
    assert seen == ["new", "reused"]


def test_plans_per_body_are_bounded():
    analysis, _ = AnalysisCache().get([("Content-Type", b"text/html")], NEWSLETTER.encode())
    part = analysis.html
    for n in range(PLANS_PER_PART + 5):  # e.g. a policy giving each reader a domain of their own
        settings = resolve(parse_config({}).smtpapi, None, Variables(), TagRegistry())
        settings = dataclasses.replace(
            settings, click_tracking=True, tracking_domain=f"t{n}.example.com"
        )
        assert len(part.plan(settings).sites) == 30
    assert len(part._plans) == PLANS_PER_PART


def test_bounded_in_entries_and_body_size():
    cache = AnalysisCache(entries=2, max_body=1000)
    headers = [("Content-Type", b"text/html")]
    bodies = [b"<a href='https://example.com/%d'>x</a>" % n for n in range(3)]
    for body in bodies:
        cache.get(headers, body)
    cache.get(headers, bodies[0])  # evicted by the third: analysed again
    assert (cache.hits, cache.misses) == (0, 4)
    cache.get(headers, bodies[0])
    assert cache.hits == 1
    big = b"x" * 1001
    cache.get(headers, big)
    cache.get(headers, big)
    assert (cache.hits, cache.misses) == (1, 4)  # never kept, never counted


def test_bodies_alike_in_the_hashed_samples_are_told_apart():
    # The key hashes a body's length and three samples (start, middle, end) only: bodies
    # that differ between them share a bucket and are told apart by the whole compare.
    cache = AnalysisCache(entries=4)
    headers = [("Content-Type", b"text/html")]
    pad = b"<!-- " + b"x" * 600 + b" -->"
    bodies = [pad + b"<a href='https://example.com/%d'>x</a>" % n + pad for n in range(3)]
    assert len({len(body) for body in bodies}) == 1
    analyses = [cache.get(headers, body)[0] for body in bodies]
    assert (cache.hits, cache.misses) == (0, 3)
    for n in (0, 2, 1):  # not the newest: found through the dictionary
        found, kept = cache.get(headers, bodies[n])
        assert kept and found is analyses[n]
        assert found.html.text.count(f"example.com/{n}'") == 1
    plain = [("Content-Type", b"text/plain")]  # the same body read as another type
    assert cache.get(plain, bodies[1])[1] is False
    assert cache.get(plain, bodies[1])[1] is True


def test_zero_turns_it_off_and_negative_is_refused():
    tracker = pipeline(analysis_cache=0)
    for _ in range(2):
        rewrite_bytes(tracker, single(NEWSLETTER), rcpt="a@example.org")
    assert tracker.analyses.hits == tracker.analyses.misses == 0
    with pytest.raises(ConfigError, match="analysis_cache"):
        parse_config({"milter": {"analysis_cache": -1}}, "x.toml")


@corpus.needed
@pytest.mark.parametrize("initial_open_pixel", [False, True])
def test_a_plans_count_is_what_counting_its_sites_gives(initial_open_pixel):
    # Each copy adds its plan's counts to its stats, worked out once per plan: they must be
    # what track.count makes of the sites, for every part of the corpus's templates.
    settings_ = dataclasses.replace(MERGE_SETTINGS, initial_open_pixel=initial_open_pixel)
    for html in templates()[:80]:
        data = corpus.wrap_html(html.encode("utf-8", "surrogateescape"), "quoted-printable")
        message = parse_message_file(data)
        analysis, _ = AnalysisCache(reuse_similar=False).get(message.headers, message.body)
        for part in (analysis.html, analysis.text):
            if part is None:
                continue
            plan = part.plan(settings_)
            ours, theirs = TrackStats(), TrackStats()
            plan.count(ours, part.is_html)
            track.count(plan.sites, theirs, part.is_html)
            assert ours == theirs
