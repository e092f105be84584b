"""Fuzz the HTML scanner and rewriter: the output equals the input outside rewritten URL
values and the pixels, whatever the markup.

Replacement URLs and pixel URLs carry a lone high surrogate (U+D800), which no decoded part
can contain (undecodable bytes become U+DC80..U+DCFF), so every change is found exactly
rather than by a pattern that input text could imitate.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["smtpapi_milter"]):
    from smtpapi_milter.rewrite.html import scan_html
    from smtpapi_milter.rewrite.track import (
        INITIAL_PIXEL,
        PIXEL,
        TrackStats,
        track_html,
        track_text,
    )
    from smtpapi_milter.settings import TrackingSettings

from ..oracle import link_target, unescape_attribute

MARK = "\ud800"
CLICK = re.compile(MARK + r"C(\d+)" + MARK)
SETTINGS = TrackingSettings(
    open_tracking=True,
    click_tracking=True,
    open_scheme="http",
    click_scheme="http",
    tracking_domain="localhost:8080",
    link_expiry=0,
    initial_open_pixel=True,
    click_tracking_text=True,
    skip_url_text_links=False,
)
# What a tracked value looks like to a second pass: on the tracking domain, never trackable.
TRACKED_URL = "http://localhost:8080/c/AAAA"
_BEFORE_VALUE = re.compile(r"""=[\t\n\f\r ]*+["']?\Z""")


class Recorder:
    """A LinkMaker whose URLs are markers; remembers which URL each marker stands for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def click(self, url: str, name: str | None, unsubscribe: bool) -> str:
        self.urls.append(url)
        return f"{MARK}C{len(self.urls) - 1}{MARK}"

    def open(self) -> str:
        return MARK + "O" + MARK

    def initial_open(self) -> str:
        return MARK + "I" + MARK


def restore(before: str, after: str, urls: list[str], same) -> None:
    """Walk ``after`` marker by marker, matching every other character against ``before``."""
    pos_in = pos_out = 0
    markers = list(CLICK.finditer(after))
    for i, m in enumerate(markers):
        segment = after[pos_out : m.start()]
        assert before.startswith(segment, pos_in), f"text changed near {pos_in}"
        pos_in += len(segment)
        url = urls[int(m.group(1))]
        following = after[m.end() : markers[i + 1].start() if i + 1 < len(markers) else None]
        if i + 1 == len(markers):
            end = len(before) - len(following)
            assert before.endswith(following) and end >= pos_in, "text changed at the end"
        else:
            end = before.find(following, pos_in)
            while end >= 0 and not same(before[pos_in:end], url):
                end = before.find(following, end + 1)
        assert end >= 0 and same(before[pos_in:end], url), (url, before[pos_in : pos_in + 80])
        pos_in, pos_out = end, m.end()
    assert before[pos_in:] == after[pos_out:], "text changed after the last URL"


def same_html(raw: str, url: str) -> bool:
    return link_target(unescape_attribute(raw)) == url


def check_html(text: str) -> None:
    links = Recorder()
    stats = TrackStats()
    out = track_html(text, SETTINGS, links, stats)
    pixel = PIXEL.format(url=links.open())
    initial = INITIAL_PIXEL.format(url=links.initial_open())
    assert out.count(pixel) == 1 and out.count(initial) == 1, "pixels missing or repeated"
    for m in CLICK.finditer(out):
        assert _BEFORE_VALUE.search(out, 0, m.start()), "tracked URL outside an attribute"
    stripped = out.replace(pixel, "").replace(initial, "")
    restore(text, stripped, links.urls, same_html)
    assert stats.html_links == len(links.urls)
    # A second pass over what we deliver sees the same links, and none left to track.
    again = CLICK.sub(TRACKED_URL, out).replace(MARK, "")
    assert len(scan_html(again).links) == len(scan_html(text).links), "links appeared"
    second = Recorder()
    track_html(again, SETTINGS, second, TrackStats())
    assert second.urls == [], f"tracked twice: {second.urls[:3]}"


def check_text(text: str) -> None:
    links = Recorder()
    out = track_text(text, SETTINGS, links, TrackStats())
    restore(text, out, links.urls, lambda raw, url: raw == url)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    check_html(text)
    check_text(text)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
