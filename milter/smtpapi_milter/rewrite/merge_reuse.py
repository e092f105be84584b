"""Scan a mail-merged HTML body by reusing the scan of the previous copy outside what changed.

The copies of one campaign differ in a few short spans (the reader's name, the reader's own
account and preferences links): everything else is the same text, and scanning it again
finds the same tags. This module scans a new text by copying the steps of an earlier scan
over the stretches the two texts share, and tokenising for real only around the changes.

It must give exactly what :func:`html.scan_html` gives (tests/test_merge_reuse.py checks it on
the corpus, on mutated copies and by hypothesis), so it rests on two facts about the
scanner (rewrite/html.py):

* At top level, between two constructs, the tokeniser's whole state is its position: what
  it found so far (links, structural offsets) never changes how it reads what follows,
  except through "the first one wins" choices, the link budget and the end of the text,
  all of which are folded in afterwards from what each step found (:class:`Step`).
* Each top-level step (skip to the next construct, read it) reads no further than where it
  resumes, or where the search for its link text's ``</a>`` stopped, plus a bounded look
  ahead (``_SLACK``: the 256-character bound on a conditional comment's expression, a few
  characters of delimiters).

So a step of the old scan may be copied, shifted, wherever the new text equals the old one
from a few characters before the step's start to past everything the step read. Where it
does not, the new text is scanned for real, step by step, until it lines up with the old one
again at a step boundary (the same length shift as before, the shift at the end of the
texts, or where the next few dozen characters are found nearby in the old text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from .._native import load
from .html import _SKIP, HtmlLink, HtmlScan, _Scanner, scan_html

_Text = TypeVar("_Text", str, bytes)  # _common_run serves rewrite/qp_reuse.py's bytes too

# What a step may read past where it resumes (see the module docstring), and before where
# it starts (look-behinds in tags: "--" before '>').
_SLACK = 300
_BEHIND = 8
# How far away, and on how long a stretch, a realignment is looked for.
_SEARCH_WINDOW = 4096
_SNIPPET = 48
# A step holds the values of these fields it set (positions shift with the text).
_FIRST_POSITIONS = ("body_start_end", "head_end_end", "html_start_end", "doctype_end", "tail_start")
_LAST_POSITIONS = ("body_end_start", "html_end_start")


class Step(NamedTuple):  # one per link or step of each new body: a tuple is made 3x faster
    """One top-level construct: read from ``start``, resumed at ``resume``.

    ``reach``: the furthest position its outcome depends on, less ``_SLACK``; ``links``:
    the links it added; ``found``: the structural fields it set (name, value)."""

    start: int
    resume: int
    reach: int
    links: tuple[HtmlLink, ...]
    found: tuple[tuple[str, int | str], ...]


@dataclass(frozen=True, slots=True)
class ScanTrace:
    """A text's scan as steps, for the next copy of a campaign to reuse.

    ``after``: for each step boundary (0, and where each step resumed), the index of the
    step read next from there (``len(steps)``: the skip from there reaches the end)."""

    text: str
    steps: tuple[Step, ...]
    after: dict[int, int]


class _TracingScanner(_Scanner):
    """The scanner, recording each top-level step with what it read and found."""

    def __init__(self, text: str) -> None:
        super().__init__(text, None)  # every link: the budget is applied when folding
        self._reach = 0

    def _text_url(self, pos: int, end: int) -> str | None:
        value = super()._text_url(pos, end)
        found = self._a_close._found
        reach = end if found is None else found.end()
        if reach > self._reach:
            self._reach = reach
        return value

    def step(self, pos: int) -> tuple[int, Step | None]:
        """Skip from ``pos`` to the next construct and read it: (resume, its step)."""
        text = self.text
        end = len(text)
        start = _SKIP.match(text, pos, end).end()
        if start >= end:
            return end, None
        for name in _FIRST_POSITIONS + _LAST_POSITIONS:
            setattr(self, name, None)
        self.base_href = None
        self._reach = 0
        before = len(self.links)
        resume = self._markup(start, end, False)
        found = [(n, getattr(self, n)) for n in _FIRST_POSITIONS + _LAST_POSITIONS]
        found.append(("base_href", self.base_href))
        step = Step(
            start=start,
            resume=resume,
            reach=max(resume, self._reach),
            links=tuple(self.links[before:]),
            found=tuple((n, v) for n, v in found if v is not None),
        )
        return resume, step


def scan(
    text: str, max_links: int | None = None, seed: ScanTrace | None = None
) -> tuple[HtmlScan, ScanTrace | None]:
    """``scan_html(text, max_links)``, reusing ``seed`` (an earlier text's trace) if given.

    Also returns the text's own trace, or None past the link budget: a trace keeps every
    link, and a part of nothing but links must not cost memory in proportion to its size.
    """
    budget = len(text) if max_links is None else max_links
    scanner = _TracingScanner(text)
    steps: list[Step] = []
    pos = 0
    shift = 0  # new position - old position where the texts last lined up
    end_shift = len(text) - (len(seed.text) if seed is not None else 0)
    while pos < len(text):
        if seed is not None:
            pos, shift = _copy(seed, text, pos, shift, end_shift, steps)
            if pos >= len(text):
                break
        pos, step = scanner.step(pos)
        if step is None:
            break
        steps.append(step)
        if len(scanner.links) > budget:  # stop early: the whole text is over budget
            return scan_html(text, max_links), None
    if sum(len(step.links) for step in steps) > budget:
        return scan_html(text, max_links), None
    after = {0: 0}
    after.update((step.resume, i + 1) for i, step in enumerate(steps))
    return _fold(text, steps, max_links), ScanTrace(text, tuple(steps), after)


def _copy(
    seed: ScanTrace, text: str, pos: int, shift: int, end_shift: int, steps: list[Step]
) -> tuple[int, int]:
    """Append the seed's steps that hold at ``pos`` (a step boundary): (new pos, shift)."""
    old = seed.text
    for delta in _shifts(old, text, pos, shift, end_shift):
        at = pos - delta
        index = seed.after.get(at)
        if index is None:  # not a boundary of the seed's scan
            continue
        if old[max(0, at - _BEHIND) : at] != text[max(0, pos - _BEHIND) : pos]:
            continue
        agree = at + _common_run(old, at, text, pos)
        # Where both texts agree to their ends, even what reads to the end holds.
        to_end = agree == len(old) and len(text) - pos == len(old) - at
        resumed = pos
        for step in seed.steps[index:]:
            if not to_end and step.reach + _SLACK > agree:
                break
            steps.append(_shifted(step, delta) if delta else step)
            resumed = step.resume + delta
            index += 1
        if to_end and index == len(seed.steps):
            return len(text), delta  # the same skip to the end as in the seed
        if resumed != pos:
            return resumed, delta
    return pos, shift


def _shifts(old: str, text: str, pos: int, shift: int, end_shift: int) -> list[int]:
    """Candidate shifts (new - old) at ``pos``: the last one, the end's, one found nearby."""
    found = [shift] if shift == end_shift else [shift, end_shift]
    snippet = text[pos : pos + _SNIPPET]
    if len(snippet) == _SNIPPET:
        lo = max(0, pos - shift - _SEARCH_WINDOW)
        at = old.find(snippet, lo, max(lo, pos - shift + _SEARCH_WINDOW + _SNIPPET))
        if at >= 0 and pos - at not in found:
            found.append(pos - at)
    return found


def _common_run_reference(a: _Text, i: int, b: _Text, j: int) -> int:
    """Length of the longest common prefix of ``a[i:]`` and ``b[j:]`` (compared in C)."""
    limit = min(len(a) - i, len(b) - j)
    # Galloping: the first ``lo`` characters agree; then halving down to the first that
    # does not (a copy ends at the next changed span, usually far less than the whole text).
    # startswith at an offset copies only b's side: a slice of each was most of the cost.
    lo, size = 0, 256
    while lo < limit and a.startswith(b[j + lo : j + min(size, limit)], i + lo):
        lo, size = min(size, limit), size * 4
    if lo == limit:
        return limit
    hi = min(size, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a.startswith(b[j + lo : j + mid], i + lo):
            lo = mid
        else:
            hi = mid
    return lo


# The same in place, without the slices (_native/textrun.c); the above is its reference,
# and SMTPAPI_PURE_PYTHON=1 forces it.
_textrun: Any = load("textrun")
_common_run = _common_run_reference if _textrun is None else _textrun.common_run


def _shifted(step: Step, delta: int) -> Step:
    return Step(
        start=step.start + delta,
        resume=step.resume + delta,
        reach=step.reach + delta,
        links=tuple(
            HtmlLink(
                link.start + delta,
                link.end + delta,
                link.url,
                link.element,
                link.name,
                link.unsubscribe,
                link.opt_out,
                link.in_conditional_comment,
                link.text_url,
            )
            for link in step.links
        ),
        found=tuple((n, v if n == "base_href" else v + delta) for n, v in step.found),
    )


def _fold(text: str, steps: list[Step], max_links: int | None) -> HtmlScan:
    """The scan's result from its steps, as the scanner's own choices would make it."""
    budget = len(text) if max_links is None else max_links
    links: list[HtmlLink] = []
    beyond = 0
    fields: dict[str, int | str] = {}
    for step in steps:
        if step.links:
            room = budget - len(links)
            if room >= len(step.links):
                links.extend(step.links)
            else:
                links.extend(step.links[: max(room, 0)])
                beyond += len(step.links) - max(room, 0)
        for name, value in step.found:
            if name in _LAST_POSITIONS or name not in fields:
                fields[name] = value
    content_start = None
    for name in ("body_start_end", "head_end_end", "html_start_end", "doctype_end"):
        if name in fields:
            content_start = fields[name]
            break
    return HtmlScan(
        links=links,
        body_start_end=fields.get("body_start_end"),
        body_end_start=fields.get("body_end_start"),
        html_end_start=fields.get("html_end_start"),
        content_start=content_start,
        base_href=fields.get("base_href"),
        tail_start=fields.get("tail_start"),
        links_beyond=beyond,
    )
