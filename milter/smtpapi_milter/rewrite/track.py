"""Track one decoded part: rewrite link values, insert pixels, unescape double curlies.

Works on text already decoded from its transfer encoding and charset, and changes it only by
edits at the offsets the scanners report, so every other character stays as it was. Where
those edits go (``html_sites``, ``text_sites``) depends on the part and the settings alone;
what goes there (``fill``) is each recipient's own tracked URLs. The pipeline keeps the sites
of a body it has seen (rewrite/analysis.py) and carries the edits down to the part's bytes,
re-encoding only what they touch; ``track_html``/``track_text`` do it all for one text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..settings import TrackingSettings
from .edits import TextEdit, apply
from .html import HtmlScan, scan_html
from .search import find
from .text import find_text_urls
from .urls import is_trackable_url

# Momentum's escapes for literal double curlies (seed 000): the sender wrote them because
# the substitution engine would otherwise eat `{{`/`}}`; the tracked body shows the real ones.
_CURLY = re.compile(r"\{\{(opening|closing)_double_curly\(\)\}\}")
_CURLY_TEXT = {"opening": "{{", "closing": "}}"}

# Bottom pixel: a plain 1x1 image; alt="" keeps screen readers and blocked-image
# placeholders quiet.
PIXEL = (
    '<img border="0" width="1" height="1" alt="" '
    'style="height:1px!important;width:1px!important;border:0!important;margin:0!important;'
    'padding:0!important" src="{url}" />'
)
# Top pixel for Gmail's clipping (SparkPost's "initial open"): hidden so it never shows.
INITIAL_PIXEL = (
    '<div style="color:transparent;visibility:hidden;opacity:0;font-size:0px;border:0;'
    "max-height:1px;width:1px;margin:0px;padding:0px;border-width:0px!important;"
    'display:none!important;line-height:0px!important;">'
    '<img border="0" width="1" height="1" alt="" src="{url}" /></div>'
)


class LinkMaker(Protocol):
    """Builds tracked URLs for one recipient's copy."""

    def click(self, url: str, name: str | None, unsubscribe: bool) -> str: ...

    def open(self) -> str: ...

    def initial_open(self) -> str: ...


@dataclass
class TrackStats:
    html_links: int = 0
    text_links: int = 0
    pixel: bool = False
    initial_pixel: bool = False
    links_beyond: int = 0  # links past the part's link budget (max_tracked_links), untouched

    @property
    def changed(self) -> bool:
        return bool(self.html_links or self.text_links or self.pixel or self.initial_pixel)


Edit = TextEdit


def track_html(text: str, settings: TrackingSettings, links: LinkMaker, stats: TrackStats) -> str:
    """The HTML part with tracked links and pixel(s), or ``text`` itself if nothing applies."""
    return _tracked(text, html_sites(scan_html(text), text, settings), links, stats, html=True)


def track_text(text: str, settings: TrackingSettings, links: LinkMaker, stats: TrackStats) -> str:
    """The plain-text part with every trackable http(s) URL tracked."""
    sites = text_sites(find_text_urls(text), text, settings)
    return _tracked(text, sites, links, stats, html=False)


def _tracked(text: str, sites: list[Site], links: LinkMaker, stats: TrackStats, html: bool) -> str:
    count(sites, stats, html=html)
    return apply(text, fill(sites, links)) if sites else text


# What goes at a site: a tracked link, a pixel, or fixed text (an unescaped double curly).
CLICK, OPEN, INITIAL_OPEN, LITERAL = "click", "open", "initial_open", "literal"


class Site(NamedTuple):  # one per link or step of each new body: a tuple is made 3x faster
    """A place in a decoded part that tracking changes, and what it puts there."""

    start: int
    end: int
    kind: str  # CLICK, OPEN, INITIAL_OPEN or LITERAL
    url: str = ""  # CLICK: the target; LITERAL: the text itself
    name: str | None = None
    unsubscribe: bool = False


def site_settings(settings: TrackingSettings) -> tuple:
    """The settings ``html_sites`` and ``text_sites`` read: copies equal in these have the
    same sites (only their tracked URLs differ)."""
    return (
        settings.click_tracking,
        settings.open_tracking,
        settings.initial_open_pixel,
        settings.skip_url_text_links,
        settings.click_tracking_text,
        settings.click_tracking_html,
        settings.tracking_domain,
    )


def html_sites(scan: HtmlScan, text: str, settings: TrackingSettings) -> list[Site]:
    """Where tracking changes an HTML part (``scan`` is ``scan_html(text)``), sorted, apart."""
    sites: list[Site] = []
    if settings.click_tracking and settings.click_tracking_html:
        for link in scan.links:
            if link.opt_out or not is_trackable_url(link.url, settings.tracking_domain):
                continue
            if settings.skip_url_text_links and link.text_url:
                continue
            sites.append(Site(link.start, link.end, CLICK, link.url, link.name, link.unsubscribe))
    if settings.open_tracking:
        # Before </body>; failing that before </html>; failing that at the end of the part
        # (still inside it: the MIME boundary is not ours to cross), but ahead of a tag or
        # comment left open at the end, which would swallow the pixel.
        bottom = _first_not_none(
            scan.body_end_start, scan.html_end_start, scan.tail_start, len(text)
        )
        sites.append(Site(bottom, bottom, OPEN))
        if settings.initial_open_pixel:
            # At the top of what renders; never ahead of a doctype (quirks mode) or in <head>.
            top = _first_not_none(scan.content_start, 0)
            sites.append(Site(top, top, INITIAL_OPEN))
    return _sorted(_with_curlies(text, sites))


def text_sites(
    urls: list[tuple[int, int, str]], text: str, settings: TrackingSettings
) -> list[Site]:
    """Where tracking changes a plain-text part whose URLs are ``find_text_urls(text)``."""
    sites: list[Site] = []
    if settings.click_tracking and settings.click_tracking_text:
        for start, end, url in urls:
            if is_trackable_url(url, settings.tracking_domain):
                sites.append(Site(start, end, CLICK, url))
    return _sorted(_with_curlies(text, sites))


def count(sites: list[Site], stats: TrackStats, html: bool) -> None:
    """Add what ``sites`` track to ``stats``."""
    clicks = sum(1 for site in sites if site.kind == CLICK)
    if html:
        stats.html_links += clicks
    else:
        stats.text_links += clicks
    stats.pixel = stats.pixel or any(site.kind == OPEN for site in sites)
    stats.initial_pixel = stats.initial_pixel or any(site.kind == INITIAL_OPEN for site in sites)


def fill(sites: list[Site], links: LinkMaker) -> list[Edit]:
    """The edits that put one copy's tracked URLs (from ``links``) at ``sites``."""
    made = values(sites, links)
    return [(site.start, site.end, new) for site, new in zip(sites, made, strict=True)]


def values(sites: list[Site], links: LinkMaker) -> list[str]:
    """What one copy puts at each of ``sites``: its tracked URLs (from ``links``), pixels and
    literal text."""
    made: list[str] = []
    for site in sites:
        kind = site.kind
        if kind == CLICK:
            new = links.click(site.url, site.name, site.unsubscribe)
        elif kind == OPEN:
            new = PIXEL.format(url=links.open())
        elif kind == INITIAL_OPEN:
            new = INITIAL_PIXEL.format(url=links.initial_open())
        else:
            new = site.url
        made.append(new)
    return made


def _first_not_none(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def _with_curlies(text: str, sites: list[Site]) -> list[Site]:
    if find(text, "_double_curly()}}", 0, len(text)) < 0:  # rarely there: a whole-text search
        return sites
    taken = sorted((site.start, site.end) for site in sites)
    extra = []
    for m in _CURLY.finditer(text):
        if not any(s < m.end() and m.start() < e for s, e in taken):
            extra.append(Site(m.start(), m.end(), LITERAL, _CURLY_TEXT[m.group(1)]))
    return sites + extra


def _sorted(sites: list[Site]) -> list[Site]:
    # Stable: a bottom pixel and a top one at the same offset (an empty part) keep their order.
    sites.sort(key=lambda site: (site.start, site.end))
    return sites
