"""What tracking needs to know of a message body, worked out once per distinct body.

A newsletter reaches the milter as one transaction per recipient (most bulk mailers send
that way, and ``multi_recipient = defer`` asks the client for it), so a worker sees the same
body again and again, and only the recipient, and with it the tokens, changes. Everything
that depends on the body alone is therefore kept: the MIME tree, the top parts decoded, the
links and pixel places found in them, where those lie in the part's bytes and which encoded
lines they touch. Each copy then only makes its tokens and encodes the lines they go into.

A :class:`BodyAnalysis` is immutable once built, apart from the plans it memoises per
tracking-settings shape (a dict filled under the GIL: two threads may both build a plan,
and either result is the same). :class:`AnalysisCache` keeps the last few, bounded in
count and in the size of body it takes.
"""

from __future__ import annotations

import codecs
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ..settings import TrackingSettings
from ..untracked import Reason, Untracked
from ..xmsysapi import is_text_charset
from . import decode_reuse, merge_reuse, mime, qp, qp_reuse
from .edits import decoded_byte_spans
from .html import HtmlScan, scan_html
from .text import find_text_urls_bounded
from .track import (
    CLICK,
    INITIAL_OPEN,
    OPEN,
    Site,
    TrackStats,
    html_sites,
    site_settings,
    text_sites,
)

# Codecs whose surrogateescape decoding always encodes back to the same bytes (PEP 383):
# checking it would only cost an encode of the whole part.
_LOSSLESS = frozenset({"utf-8", "ascii", "iso8859-1"})
# Settings shapes whose plans one part keeps: a site has one or a few (per listener); a
# policy that gave every recipient a tracking domain of its own must not grow it unbounded.
PLANS_PER_PART = 16


@dataclass
class PartPlan:
    """Where one part changes under one settings shape, for every copy alike.

    ``spans``: the sites' places in the part's decoded bytes (None: the charset keeps
    state, and each copy works them out with its own replacements); ``regions``: for a
    quoted-printable part, the encoded lines those places touch; ``links_beyond``: links
    past the part's link budget, left as they are; ``clicks`` and ``click_bytes``: the
    tracked links and the decoded bytes they replace (None without ``spans``), for the
    size estimate (rewrite/size_limit.py)."""

    sites: list[Site]
    spans: list[tuple[int, int]] | None
    regions: list[qp.Region] | None
    links_beyond: int = 0
    clicks: int = 0
    click_bytes: int | None = 0
    # Whether the sites put the bottom pixel and the top one: with ``clicks``, what each copy
    # adds to its TrackStats (``count``), worked out once rather than per copy.
    pixel: bool = False
    initial_pixel: bool = False
    # The splice made ready for the plan's spans (a QP part's), made by the first copy.
    ready: qp.Splice | None = field(default=None, repr=False, compare=False)

    def count(self, stats: TrackStats, html: bool) -> None:
        """``track.count(self.sites, stats, html)``."""
        if html:
            stats.html_links += self.clicks
        else:
            stats.text_links += self.clicks
        stats.pixel = stats.pixel or self.pixel
        stats.initial_pixel = stats.initial_pixel or self.initial_pixel


@dataclass
class PartAnalysis:
    """One top part: its bytes, decoded and as text, and what its scan found."""

    part: mime.MimePart
    raw: bytes
    decoded: bytes
    charset: str
    text: str
    eol: bytes
    is_html: bool
    bare_cr: bool
    max_links: int | None = None  # the link budget: links kept by the scan (None: all)
    # Kept for the next body's scan to reuse (rewrite/merge_reuse.py): made when the part is
    # cached, and seeded with the trace of an earlier body's part when there is one.
    traced: bool = False
    _seed: merge_reuse.ScanTrace | None = None
    # The same part of an earlier body (its raw bytes and plans), whose QP regions this
    # part's plans start from (rewrite/qp_reuse.py); dropped once used.
    _similar: tuple[bytes, dict[tuple, PartPlan]] | None = None
    # The part decoded in pieces (rewrite/decode_reuse.py), for the next body's same part to
    # take over; kept by the newest body of the cache only.
    _pieces: decode_reuse.Pieces | None = None
    _trace: merge_reuse.ScanTrace | None = None
    _html_scan: HtmlScan | None = None
    _text_urls: tuple[list[tuple[int, int, str]], int] | None = None
    _plans: dict[tuple, PartPlan] = field(default_factory=dict)

    def plan(self, settings: TrackingSettings) -> PartPlan:
        """The part's sites under ``settings`` and where they lie, built once per shape."""
        key = site_settings(settings)
        found = self._plans.get(key)
        if found is None:
            found = self._build_plan(settings, key)
            if len(self._plans) < PLANS_PER_PART:
                self._plans[key] = found
        return found

    def splice(self, plan: PartPlan, replacements: list[bytes]) -> bytes:
        """``qp.splice_regions`` of ``replacements`` at the plan's spans, one each (the plan
        has regions), through the plan's made-ready splice."""
        assert plan.regions is not None and plan.spans is not None
        if plan.ready is None:
            plan.ready = qp.Splice(self.raw, self.decoded, plan.regions, plan.spans, self.eol)
        return plan.ready.fill(replacements)

    def _build_plan(self, settings: TrackingSettings, key: tuple) -> PartPlan:
        # The scan does not depend on the settings: one for every plan of the part.
        if self.is_html:
            if self._html_scan is None and self.traced:
                seed, self._seed = self._seed, None  # used once: the trace is kept instead
                self._html_scan, self._trace = merge_reuse.scan(self.text, self.max_links, seed)
            elif self._html_scan is None:
                self._html_scan = scan_html(self.text, self.max_links)
            sites = html_sites(self._html_scan, self.text, settings)
            clicks_html = settings.click_tracking and settings.click_tracking_html
            beyond = self._html_scan.links_beyond if clicks_html else 0
        else:
            if self._text_urls is None:
                self._text_urls = find_text_urls_bounded(self.text, self.max_links)
            sites = text_sites(self._text_urls[0], self.text, settings)
            clicks_text = settings.click_tracking and settings.click_tracking_text
            beyond = self._text_urls[1] if clicks_text else 0
        if not sites:
            return PartPlan(sites, [], None, beyond)
        where = [(s.start, s.end) for s in sites]
        spans = decoded_byte_spans(self.text, self.decoded, where, self.charset)
        regions = None
        if spans is not None and self.part.cte == "quoted-printable":
            regions = self._regions(spans, key)
        clicks = [i for i, site in enumerate(sites) if site.kind == CLICK]
        click_bytes = None if spans is None else sum(spans[i][1] - spans[i][0] for i in clicks)
        plan = PartPlan(sites, spans, regions, beyond, len(clicks), click_bytes)
        plan.pixel = any(site.kind == OPEN for site in sites)
        plan.initial_pixel = any(site.kind == INITIAL_OPEN for site in sites)
        return plan

    def _regions(self, spans: list[tuple[int, int]], key: tuple) -> list[qp.Region]:
        similar, self._similar = self._similar, None
        earlier = similar[1].get(key) if similar is not None else None
        if similar is None or earlier is None or not earlier.regions or not earlier.spans:
            return qp.regions(self.raw, spans, self.bare_cr)
        args = (similar[0], earlier.regions, earlier.spans, self.raw, spans, self.bare_cr)
        return qp_reuse.regions_like(*args)


@dataclass
class BodyAnalysis:
    """A body's MIME tree and its top parts, or why it must go out untouched."""

    root: mime.MimePart
    untracked: Untracked | None
    html: PartAnalysis | None = None
    text: PartAnalysis | None = None
    # Why a top part cannot be changed (logged per message by the caller), by kind.
    part_problems: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _analyse(
    fields: tuple[str, str, str, bool],
    body: bytes,
    max_links: int | None,
    similar: tuple[PartAnalysis | None, PartAnalysis | None] | None = None,
) -> BodyAnalysis:
    """``similar``: the HTML and text parts of a body like this one (the last one kept), whose
    decoding the parts take over where they hold the same lines; None: decoded whole."""
    root = mime.parse_body(fields, body)
    bare_cr = mime.has_bare_cr(body)  # looked for once, for every part
    reason = mime.untouchable_reason(root, body, bare_cr)
    if reason is not None:
        return BodyAnalysis(root, _untouchable(reason))
    analysis = BodyAnalysis(root, None)
    html, text = mime.top_parts(root)
    problems = analysis.part_problems
    pieces = similar is not None
    earlier_html, earlier_text = similar or (None, None)
    if html is not None:
        analysis.html = _part(body, html, True, bare_cr, problems, max_links, pieces, earlier_html)
    if text is not None:
        analysis.text = _part(body, text, False, bare_cr, problems, max_links, pieces, earlier_text)
    return analysis


def _untouchable(reason: str) -> Untracked:
    signed = reason.startswith(mime.SIGNED) or reason == mime.INLINE_PGP
    return Untracked(Reason.SIGNED_OR_ENCRYPTED if signed else Reason.UNSAFE_MIME, reason)


def _part(
    body: bytes,
    part: mime.MimePart,
    is_html: bool,
    bare_cr: bool,
    problems: list[tuple[str, dict[str, str]]],
    max_links: int | None,
    in_pieces: bool = False,
    earlier: PartAnalysis | None = None,
) -> PartAnalysis | None:
    """The part decoded to text, if we can change it; else None and the reason noted.
    ``in_pieces``: a quoted-printable part in a charset decode_reuse takes is decoded in
    pieces, taking over those of ``earlier`` (the same part of a similar body) it holds."""
    if part.headers_only:
        # Anything added would land in its last header field (RFC 2046 allows no body).
        problems.append(("part left untracked: it has no body", {}))
        return None
    raw = body[part.body_start : part.end]
    charset = _codec(part.charset)
    pieces = None
    if in_pieces and part.cte == "quoted-printable" and charset in decode_reuse.CODECS:
        seed = earlier._pieces if earlier is not None else None
        found = decode_reuse.decode(raw, charset, seed)  # None: decoded whole below
        if found is not None:
            decoded, text, pieces = found
    if pieces is None:
        whole = mime.decode_transfer(raw, part.cte)
        if whole is None:
            why = "not decodable as written" if part.cte in mime.KNOWN_ENCODINGS else "unknown"
            problems.append((f"part left untracked: transfer encoding {why}", {"cte": part.cte}))
            return None
        if charset is None:
            problems.append(("part left untracked: unknown charset", {"charset": part.charset}))
            return None
        read = _decode(whole, charset)
        if read is None:
            problems.append(
                ("part left untracked: charset does not round-trip", {"charset": part.charset})
            )
            return None
        decoded, text = whole, read
    eol = mime.line_ending(body, part.body_start, part.end)
    return PartAnalysis(
        part, raw, decoded, charset, text, eol, is_html, bare_cr, max_links, _pieces=pieces
    )


def _codec(charset: str) -> str | None:
    return codecs.lookup(charset).name if is_text_charset(charset) else None


def _decode(data: bytes, charset: str) -> str | None:
    """The part's text, if it encodes back to exactly these bytes; None otherwise.

    Some codecs refuse the surrogateescape handler (idna, punycode) or raise on malformed
    input whatever the handler (unicode_escape, utf-32): such a part is left as it is.
    """
    try:
        text = data.decode(charset, "surrogateescape")
        if charset in _LOSSLESS:
            return text
        return text if text.encode(charset, "surrogateescape") == data else None
    except (UnicodeError, ValueError):
        return None


class _BodyKey:
    """A body (and the header fields its MIME tree reads) as the cache's key: hashed by its
    length and three samples of it, compared whole.

    Each copy of a mail merge is a body not seen before, and hashing all of it (Python's
    bytes hash reads every byte) cost 20-29 us a 99 KB body (300 bodies in turn, more than
    the caches hold), for a lookup that then misses; the key's hash, 1.9-2.1 us.
    Bodies that agree in the samples fall in one bucket and are told apart by the compare
    (memcmp, which stops at the first difference); the cache holds a few entries."""

    __slots__ = ("_hash", "body", "fields")

    def __init__(self, fields: tuple[str, str, str, bool], body: bytes):
        self.fields, self.body = fields, body
        size, middle = len(body), len(body) // 2
        samples = (body[:_SAMPLE], body[middle : middle + _SAMPLE], body[-_SAMPLE:])
        self._hash = hash((fields, size, samples))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _BodyKey):
            return NotImplemented
        return self._hash == other._hash and self.body == other.body and self.fields == other.fields


_SAMPLE = 256  # bytes of a body in each of _BodyKey's samples


class AnalysisCache:
    """The analyses of the last ``entries`` distinct bodies up to ``max_body`` bytes.

    Keyed by the body itself (and the header fields the MIME tree reads): a hit is a
    dictionary lookup, one hash and one compare of the body, where a fresh analysis parses,
    decodes and scans it. Bigger bodies are analysed every time and never held, so the
    cache holds at most about ``entries`` x ``max_body`` x 4 bytes (raw, decoded, text),
    and the newest body's decoded bytes and text once more (its pieces, decode_reuse.py).
    """

    def __init__(
        self,
        entries: int = 8,
        max_body: int = 1024 * 1024,
        max_links: int | None = None,
        reuse_similar: bool = True,
    ):
        self.entries = entries
        self.max_body = max_body
        self.max_links = max_links  # per top part: the link budget
        # A new body's HTML scan starts from the last kept body's (rewrite/merge_reuse.py).
        self.reuse_similar = reuse_similar
        self._lock = threading.Lock()
        self._kept: OrderedDict[_BodyKey, BodyAnalysis] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, headers: list[tuple[str, bytes]], body: bytes) -> tuple[BodyAnalysis, bool]:
        """The analysis of ``body``, and whether it is the one kept from an earlier message."""
        fields = mime.structure_fields(headers)
        if self.entries <= 0 or len(body) > self.max_body:
            return _analyse(fields, body, self.max_links), False
        with self._lock:
            # The newest body again (a newsletter, one transaction per reader): comparing
            # it (memcmp) costs a fraction of hashing the new bytes, which reads them all.
            newest = next(reversed(self._kept), None)
            if newest is not None and newest.body == body and newest.fields == fields:
                self.hits += 1
                return self._kept[newest], True
        key = _BodyKey(fields, body)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                self.hits += 1
                return found, True
            self.misses += 1
            seed = self._seed() if self.reuse_similar else None
            similar = self._newest_parts() if self.reuse_similar else (None, None)
        # Outside the lock: other threads go on meanwhile.
        analysis = _analyse(fields, body, self.max_links, similar if self.reuse_similar else None)
        if self.reuse_similar and analysis.html is not None:
            analysis.html.traced = True
            analysis.html._seed = seed
        for part, earlier in zip((analysis.html, analysis.text), similar, strict=True):
            if part is not None and earlier is not None and part.part.cte == earlier.part.cte:
                part._similar = (earlier.raw, earlier._plans)
        with self._lock:
            self._kept[key] = analysis
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        # Only the newest body's pieces are taken over: the earlier ones are let go (each
        # holds the part's decoded bytes and text a second time).
        for earlier in similar:
            if earlier is not None:
                earlier._pieces = None
        return analysis, False

    def _newest_parts(self) -> tuple[PartAnalysis | None, PartAnalysis | None]:
        """The HTML and text parts of the most recent kept body (under the lock)."""
        for kept in reversed(self._kept.values()):
            if kept.html is not None or kept.text is not None:
                return kept.html, kept.text
        return None, None

    def _seed(self) -> merge_reuse.ScanTrace | None:
        """The HTML scan trace of the most recent kept body that has one (under the lock)."""
        for kept in reversed(self._kept.values()):
            if kept.html is not None and kept.html._trace is not None:
                return kept.html._trace
        return None
