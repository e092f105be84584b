"""Reusing an earlier part's QP regions (rewrite/qp_reuse.py) gives exactly ``qp.regions``.

Mail-merged copies share most encoded lines, shifted; the reuse takes the earlier part's
regions there and walks for real elsewhere. Whatever the edit, the result must equal the
walk over the new part: by hypothesis on random lines, edits of lines and edit spans, and on
the mail-merged copies of the throughput bench.
"""

from __future__ import annotations

import binascii
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.rewrite import mime, qp, qp_reuse
from smtpapi_milter.rewrite.analysis import AnalysisCache

from . import corpus
from .test_merge_reuse import TRACK_ALL, merged_copy, templates

# Lines as encoders write them and as they trip decoders up: soft breaks (with CR, LF, junk
# or spaces before the LF), escapes (broken ones too), empty lines, full 76-character lines.
LINES = [
    b"<p>Hello there,</p>\r\n",
    b'<a href=3D"https://www.example.com/a?x=3D1&amp;y=3D2">Read</a>\r\n',
    b"plain words and more plain words=\r\n",
    b"=3D=3d=C3=A9=\r\n",
    b"\r\n",
    b"=\r\n",
    b"x" * 75 + b"=\r\n",
    b"tail without break",
    b"lf only line\n",
    b"soft lf=\n",
    b"=\rjunk\n",
    b"= \r\n",
    b"=4\r\n",
    b"=G1 broken\r\n",
    b"\xff\xfe high bytes\r\n",
    b"short\r\n",
]
# Sometimes a line unfit for the wire (a bare CR, over 998 octets): the reuse steps aside.
UNFIT = [b"bare\rcr\r\n", b"y" * 1000 + b"\r\n"]


def _decoded_starts(lines: list[bytes]) -> list[int]:
    """Each line's decoded start, and the decoded length of them all, last."""
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(binascii.a2b_qp(line))
    return [*starts, pos]


def _spans(marks: list[tuple[int, int, int]], starts: list[int]) -> list[tuple[int, int]]:
    """Sorted, apart spans from (line, offset in its decoding, length) marks."""
    total = starts[-1]
    points = sorted(
        (min(starts[line] + offset, total), min(starts[line] + offset + length, total))
        for line, offset, length in marks
        if line < len(starts) - 1
    )
    spans: list[tuple[int, int]] = []
    for start, end in points:
        if not spans or start >= spans[-1][1]:
            spans.append((start, end))
    return spans


@st.composite
def merged_parts(draw):
    """An earlier part, a new one made by replacing, inserting and deleting lines, and
    spans in both: the same ones on the lines both keep, others around the changes."""
    pool = LINES + (UNFIT if draw(st.integers(0, 9)) == 0 else [])
    old_lines = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=40))
    mark = st.tuples(st.integers(0, 60), st.integers(0, 24), st.integers(0, 30))
    old_marks = [(line % len(old_lines), o, n) for line, o, n in draw(st.lists(mark, max_size=12))]
    new_lines: list[bytes] = []
    kept: dict[int, int] = {}  # old line -> new line, for the lines kept as they were
    for index, line in enumerate(old_lines):
        action = draw(st.sampled_from(["keep"] * 6 + ["replace", "insert", "delete"]))
        if action == "insert":
            new_lines.append(draw(st.sampled_from(pool)))
        if action == "replace":
            new_lines.append(draw(st.sampled_from(pool)))
        elif action != "delete":
            kept[index] = len(new_lines)
            new_lines.append(line)
    old_starts, new_starts = _decoded_starts(old_lines), _decoded_starts(new_lines)
    new_marks = [(kept[line], off, n) for line, off, n in old_marks if line in kept]
    new_marks += draw(st.lists(mark, max_size=4))
    old_raw, new_raw = b"".join(old_lines), b"".join(new_lines)
    return (
        old_raw,
        _spans(old_marks, old_starts),
        new_raw,
        _spans([(line % max(len(new_lines), 1), o, n) for line, o, n in new_marks], new_starts),
    )


@settings(max_examples=800, deadline=None)
@given(merged_parts(), st.booleans(), st.sampled_from([1, 4, 16, qp_reuse._SNIPPET]))
def test_regions_like_an_earlier_part_are_the_walks_regions(case, bare_cr, snippet):
    old_raw, old_spans, raw, spans = case
    bare_cr = bare_cr or mime.has_bare_cr(raw) or mime.has_bare_cr(old_raw)
    old_regions = qp.regions(old_raw, old_spans, bare_cr)
    # Short snippets find the shared lines again even in these short parts (how far ahead
    # they are found changes what is reused, never what comes out).
    with mock.patch.object(qp_reuse, "_SNIPPET", snippet):
        reused = qp_reuse.regions_like(old_raw, old_regions, old_spans, raw, spans, bare_cr)
    assert reused == qp.regions(raw, spans, bare_cr)


SETTINGS = TRACK_ALL


def _plans(html: str, readers: range):
    """Each reader's copy of ``html``, QP, as its top parts and their plans."""
    cache = AnalysisCache(reuse_similar=False)
    for reader in readers:
        data = corpus.wrap_html(merged_copy(html, reader).encode(), "quoted-printable")
        message = parse_message_file(data)
        analysis, _ = cache.get(message.headers, message.body)
        yield [(p, p.plan(SETTINGS)) for p in (analysis.html, analysis.text) if p is not None]


def _check_copies(html: str, readers: range) -> list[tuple[int, int]]:
    """Reuse each copy's regions for the next; (regions moved over, regions) per part."""
    counts = []
    earlier = None
    for parts in _plans(html, readers):
        for (old, old_plan), (new, plan) in zip(earlier or parts, parts, strict=True):
            if earlier is None:
                break
            if plan.regions is None or old_plan.regions is None:
                continue
            args = (old.raw, old_plan.regions, old_plan.spans, new.raw, plan.spans)
            assert qp_reuse.regions_like(*args, new.bare_cr) == plan.regions
            runs = qp_reuse._runs(*args[:4])
            counts.append((sum(len(run.regions) for run in runs), len(plan.regions)))
        earlier = parts
    return counts


@corpus.needed
def test_mail_merged_copies_of_every_template_reuse_as_a_walk():
    for html in templates():
        _check_copies(html, range(1, 4))


@corpus.needed
def test_mail_merged_newsletter_reuses_all_but_the_changed_regions():
    html = corpus.realistic((corpus.CORPUS / "html/colorlib/14__index.html").read_bytes())
    counts = _check_copies(html.decode("utf-8", "surrogateescape"), range(1, 5))
    assert counts
    # A greeting, a name in the middle and the reader's links differ: all else moves over.
    assert all(moved >= regions - 3 for moved, regions in counts), counts


def test_a_region_at_the_earlier_parts_end_is_not_moved_before_more_lines():
    # A pixel at the very end of the earlier part sits in an empty region there; in a part
    # that goes on after the same lines, that offset lies in the next line instead.
    old = b"<p>Hello there,</p>\r\n" * 3
    raw = old + b"<p>one more line</p>\r\n"
    end = len(binascii.a2b_qp(old))
    old_regions = qp.regions(old, [(end, end)])
    reused = qp_reuse.regions_like(old, old_regions, [(end, end)], raw, [(end, end)])
    assert reused == qp.regions(raw, [(end, end)])


def test_lines_that_differ_in_escapes_shift_the_decoded_offsets_after_them():
    # The decoded shift after a differing line comes from its decoding, not its length:
    # with the wrong shift the earlier regions would not be found again (the result stays
    # right, the reuse is lost).
    shared = b'<a href=3D"https://www.example.com/a">Read</a>\r\n' * 4
    old, raw = b"x=3Dy\r\n" + shared, b"x=3D=3D=3Dy and more\r\n" + shared
    head_old, head_new = len(binascii.a2b_qp(b"x=3Dy\r\n")), len(binascii.a2b_qp(raw[:22]))
    line = len(binascii.a2b_qp(shared)) // 4
    old_spans = [(head_old + n * line + 9, head_old + n * line + 33) for n in range(4)]
    spans = [(s - head_old + head_new, e - head_old + head_new) for s, e in old_spans]
    old_regions = qp.regions(old, old_spans)
    assert qp_reuse.regions_like(old, old_regions, old_spans, raw, spans) == qp.regions(raw, spans)
    runs = qp_reuse._runs(old, old_regions, old_spans, raw)
    assert [span for run in runs for span in run.spans] == spans
