"""Find a quoted-printable part's splice regions by reusing those of a similar earlier part.

Mail-merged copies of a campaign differ in a few short spans (rewrite/merge_reuse.py reuses
the HTML scan across them); their encoded lines are the same elsewhere, only shifted. Finding
the regions (``qp.regions``) walks every line up to each edit and decodes it to learn where
the edit lies; this module instead takes the earlier part's regions over the stretches of
lines both parts share, and walks for real only around what changed.

It must give exactly what ``qp.regions`` gives (tests/test_qp_reuse.py checks it by hypothesis
on random edits and on mail-merged copies), and rests on these facts:

* A quoted-printable line decodes on its own (qp.py's module docstring): lines that are the
  same bytes decode to the same bytes, so over a stretch of whole lines both parts share,
  decoded offsets differ by one constant. That constant is known from the decoded lengths
  of the differing stretches before it alone (each is whole lines too), which are short.
* ``qp.regions`` builds each region from the line holding its first edit's start, taking
  lines until its edits' ends, and joins the next edit when it starts before the region's
  decoded end (or the region is open at the part's end). Where a region of the earlier part
  lies within a shared stretch and the new part has the same edits there (shifted), the walk
  would build the same region, shifted, provided the new walk's previous region does not
  take its first edit (checked here as the walk checks it). So the regions of one shared
  stretch move over as a run, checked at once (the same edits, shifted): moving them one by
  one cost about as much Python per region as walking (measured).
* Lines unfit for the wire get regions of their own: a part with any is left to
  ``qp.regions``.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

from . import qp
from .merge_reuse import _common_run

# How a shared stretch is found again after one differs: the next few lines of the new part
# are looked for (by their first bytes) this far ahead in the earlier part.
_SNIPPET = 64
_WINDOW = 16384
_LINES_TRIED = 32
_RESYNCS = 16  # differing stretches per part; a part unlike the earlier one stops early


def regions_like(
    old_raw: bytes,
    old_regions: Sequence[qp.Region],
    old_spans: Sequence[qp.Span],
    raw: bytes,
    spans: Sequence[qp.Span],
    bare_cr: bool = True,
) -> list[qp.Region]:
    """``qp.regions(raw, spans, bare_cr)``, reusing the regions the earlier part ``old_raw``
    got for ``old_spans`` wherever both parts share the lines around them."""
    if not old_regions or qp._unfit_lines(raw, bare_cr):
        return qp.regions(raw, spans, bare_cr)
    runs = _runs(old_raw, old_regions, old_spans, raw)
    walk = qp._Walk(raw, [])
    index = next_run = 0
    while index < len(spans):
        here = (spans[index][0], spans[index][1])
        while next_run < len(runs) and runs[next_run].spans[0] < here:
            next_run += 1
        run = runs[next_run] if next_run < len(runs) else None
        if run is not None and run.spans[0] == here and _fits(run, spans, index, walk):
            walk.regions += run.regions
            walk.x, walk.dx = run.regions[-1].end, run.regions[-1].dend
            index += len(run.spans)
            next_run += 1
        else:
            walk.add(here[0], here[1])
            index += 1
    return walk.regions


class _Run:
    """Consecutive regions of the earlier part on lines both parts share, moved to where
    those lines are in the new part, with the spans of their edits (moved too)."""

    __slots__ = ("regions", "spans")

    def __init__(self, regions: list[qp.Region], spans: list[tuple[int, int]]):
        self.regions, self.spans = regions, spans


def _fits(run: _Run, spans: Sequence[qp.Span], index: int, walk: qp._Walk) -> bool:
    """Whether the walk, at the new part's span ``index``, would build the run's regions."""
    last = walk.regions[-1] if walk.regions else None
    if last is not None and (run.spans[0][0] < last.dend or qp._open_ended(walk.raw, last)):
        return False  # the walk would add the run's first edit to its previous region
    # The same edits, and so the same choices: each region's first line is the one holding
    # its first edit, its lines reach its edits' ends, the next edit joins it or not alike.
    return [(s[0], s[1]) for s in spans[index : index + len(run.spans)]] == run.spans


def _runs(
    old_raw: bytes, old_regions: Sequence[qp.Region], old_spans: Sequence[qp.Span], raw: bytes
) -> list[_Run]:
    blocks = _blocks(old_raw, raw)
    runs: list[_Run] = []
    group: list[qp.Region] = []  # regions of the run being gathered, unmoved
    first_span = taken = k = 0
    group_block: _Block | None = None

    def close() -> None:
        if group and group_block is not None:
            r, d = group_block.new_start - group_block.old_start, group_block.decoded_shift
            moved = [qp.Region(g.start + r, g.end + r, g.dstart + d, g.dend + d) for g in group]
            for new, old in zip(moved, group, strict=True):
                new.edit_count = old.edit_count
            held = old_spans[first_span : first_span + sum(g.edit_count for g in group)]
            runs.append(_Run(moved, [(s[0] + d, s[1] + d) for s in held]))
        group.clear()

    for region in old_regions:
        held_from, taken = taken, taken + region.edit_count
        while k < len(blocks) and blocks[k].old_end < region.end:
            k += 1
        if k == len(blocks):
            break
        block = blocks[k]
        shared = region.edit_count > 0 and region.start >= block.old_start
        if region.end == len(old_raw) and block.new_end != len(raw):
            shared = False  # open at the earlier part's end, not at this one's
        if not shared or block is not group_block:
            close()
        if shared:
            if not group:
                first_span, group_block = held_from, block
            group.append(region)
    close()
    return runs


class _Block:
    """Whole lines the same in both parts: ``old_start``/``new_start`` and the length;
    ``decoded_shift``: new decoded offset minus old over them."""

    __slots__ = ("decoded_shift", "length", "new_start", "old_start")

    def __init__(self, old_start: int, new_start: int, length: int, decoded_shift: int):
        self.old_start, self.new_start, self.length = old_start, new_start, length
        self.decoded_shift = decoded_shift

    @property
    def old_end(self) -> int:
        return self.old_start + self.length

    @property
    def new_end(self) -> int:
        return self.new_start + self.length


def _blocks(old: bytes, new: bytes) -> list[_Block]:
    """The stretches of whole lines ``old`` and ``new`` share, in order (a greedy match:
    it need not be the best one, only true)."""
    out: list[_Block] = []
    i = j = 0  # line starts in both
    shift = 0
    resyncs = 0
    while i < len(old) and j < len(new):
        run = _common_run(old, i, new, j)
        end_i, end_j = i + run, j + run
        if not (end_i == len(old) and end_j == len(new)):
            cut = old.rfind(b"\n", i, end_i)  # the shared stretch ends with a whole line
            end_i = cut + 1 if cut >= 0 else i
            end_j = j + (end_i - i)
        if end_i > i:
            out.append(_Block(i, j, end_i - i, shift))
        if end_i == len(old) or end_j == len(new) or resyncs == _RESYNCS:
            break
        resyncs += 1
        found = _resync(old, new, end_i, end_j)
        if found is None:
            break
        i, j = found
        # The lines skipped in each part (whole lines) move the decoded offsets after them.
        shift += len(binascii.a2b_qp(new[end_j:j])) - len(binascii.a2b_qp(old[end_i:i]))
    return out


def _resync(old: bytes, new: bytes, i: int, j: int) -> tuple[int, int] | None:
    """Line starts from ``i`` in ``old`` and past ``j`` in ``new`` where the next bytes agree."""
    origin = j
    for _ in range(_LINES_TRIED):
        nl = new.find(b"\n", j)
        if nl < 0:
            return None
        j = nl + 1
        snippet = new[j : j + _SNIPPET]
        if len(snippet) < _SNIPPET:
            return None
        limit = i + (j - origin) + _WINDOW
        at = old.find(snippet, i, limit)
        while at > 0 and old[at - 1] != 10:  # a line start in old too
            at = old.find(snippet, at + 1, limit)
        if at >= 0:
            return at, j
    return None
