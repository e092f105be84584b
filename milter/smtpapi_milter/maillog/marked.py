"""The lines of a batch a parser wants: those holding one of its markers (``MARKERS``).

Most lines of a busy mail log tell a parser nothing (smtpd's connects, cleanup, the queue
manager's queue lines: six of seven in bench/maillog_bench.py's log). Testing each line was
one Python step, one object and one regex search per line, the follower's largest cost per
line read. Here each block of lines the file source read (whole lines joined by newlines) is
searched for each marker at once (``bytes.find``, in C): the Python steps are per line kept.
"""

from __future__ import annotations

from collections.abc import Iterable

NEWLINE = b"\n"


def marked_lines(blocks: Iterable[bytes], markers: Iterable[bytes]) -> list[bytes]:
    """The lines of ``blocks`` (each some lines joined by newlines) holding any of
    ``markers``, in their order, each once and without its newline: the same as
    ``[line for block in blocks for line in block.split(b"\\n") if any(m in line for m in
    markers)]``."""
    markers = list(markers)
    if not all(markers) or any(NEWLINE in marker for marker in markers):
        # An empty marker is in every line; one with a newline in none (a search through
        # the block would find it across two).
        return [
            line
            for block in blocks
            for line in block.split(NEWLINE)
            if any(marker in line for marker in markers)
        ]
    kept: list[bytes] = []
    for block in blocks:
        kept += _marked(block, markers)
    return kept


def _marked(block: bytes, markers: list[bytes]) -> list[bytes]:
    find, rfind = block.find, block.rfind
    spans: list[tuple[int, int]] = []  # (start, end) of each line a marker was found in
    hit = 0  # markers found in the block: with two, a line may have been found twice
    for marker in markers:
        at = find(marker)
        if at >= 0:
            hit += 1
        while at >= 0:
            end = find(NEWLINE, at)
            if end < 0:
                spans.append((rfind(NEWLINE, 0, at) + 1, len(block)))
                break
            spans.append((rfind(NEWLINE, 0, at) + 1, end))
            at = find(marker, end)  # from the next line on: one hit per line is enough
    if hit > 1:
        spans = sorted(set(spans))
    return [block[start:end] for start, end in spans]
