"""The oracle's check of a changed quoted-printable part, line by line (SPEC 4 fidelity).

The promise: every encoded line of the sender's that no change touches is delivered byte for
byte, in order; the lines a change touches are written anew, at most 76 characters each (RFC
2045 6.7). Lines unfit for the wire (a bare CR, over 998 octets) may be written anew too once
the part changes, and so may a line that decodes to nothing (a lone soft break): it holds
none of the sender's text.

How it is judged, without the rewrite's own code: the oracle knows where the changes are in
the part's text (``oracle._restore``: each tracked URL's raw value, each pixel's place), and
a quoted-printable decoder starts afresh after every line break (a soft break ends at its LF,
an =XX escape never spans one), so each encoded line's decoding is its own and its place in
the decoded bytes is known. A line is touched when its decoded bytes overlap a change (or, for
an insertion, border it). The untouched lines, run by run, must then appear in the output as
they were, in order; every other output line is new and at most 76 characters.
"""

from __future__ import annotations

import binascii
import re

MAX_ENCODED = 76
LINE_LIMIT = 998
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def lines(raw: bytes) -> list[bytes]:
    """The encoded lines of a part body, each with its line break (the last may have none)."""
    return _LINE.findall(raw)


def _content(line: bytes) -> bytes:
    return line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line


def unfit(line: bytes) -> bool:
    """A line that may not go out as it is once its part changes."""
    content = _content(line)
    return len(content) > LINE_LIMIT or b"\r" in content


def check_qp_lines(
    raw_in: bytes, raw_out: bytes, text: str, charset: str | None, changes: list[tuple[int, int]]
) -> int:
    """Assert the promise for one part whose decoded ``text`` (in ``charset``) changed at
    ``changes`` (sorted (start, end) offsets in it); returns how many lines are new."""
    if raw_in == raw_out:
        return 0  # a part left as it was keeps every line, unfit ones too (see ``unfit``)
    before = lines(raw_in)
    decoded = [binascii.a2b_qp(line) for line in before]
    # The premise, checked: lines decode on their own.
    assert b"".join(decoded) == binascii.a2b_qp(raw_in), "a line's decoding depends on another"
    spans = _byte_spans(text, charset or "us-ascii", changes, b"".join(decoded))
    if spans is None:
        return 0  # a charset that encodes with state (UTF-7, ISO-2022): no byte offsets
    touched = _touched(decoded, spans)
    kept = _kept_runs(before, touched)
    new = _embed(raw_out, kept)
    others = {line for line, hit in zip(before, touched, strict=True) if hit}
    for line in new:
        assert len(_content(line)) <= MAX_ENCODED or line in others, (
            f"encoded line over 76: {line[:80]!r}"
        )
    return len(new)


def _byte_spans(
    text: str, charset: str, changes: list[tuple[int, int]], data: bytes
) -> list[tuple[int, int]] | None:
    """``changes`` as offsets in ``data`` (``text`` encoded), or None if the pieces of text
    between them do not encode to ``data`` one by one."""
    cuts = sorted({0, len(text), *(offset for change in changes for offset in change)})
    where = {0: 0}
    pieces = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        pieces.append(text[a:b].encode(charset, "surrogateescape"))
        where[b] = where[a] + len(pieces[-1])
    if b"".join(pieces) != data:
        return None
    return [(where[start], where[end]) for start, end in changes]


def _touched(decoded: list[bytes], spans: list[tuple[int, int]]) -> list[bool]:
    """For each line: does its decoded range overlap a change, border an insertion, or hold
    nothing at all? (``spans`` sorted and apart, so a sweep finds them.)"""
    touched = []
    start = first = 0
    for text in decoded:
        end = start + len(text)
        while first < len(spans) and spans[first][1] < start:
            first += 1  # ends before this line: touches no line from here on
        hit = not text
        for s, e in spans[first:]:
            if s > end:
                break
            hit = hit or (start <= s if s == e else start < e and s < end)
        touched.append(hit)
        start = end
    return touched


def _kept_runs(before: list[bytes], touched: list[bool]) -> list[bytes]:
    """The untouched lines, as runs of consecutive lines."""
    runs: list[bytes] = []
    run: list[bytes] = []
    for line, hit in zip(before, touched, strict=True):
        if hit or unfit(line):
            if run:
                runs.append(b"".join(run))
                run = []
        else:
            run.append(line)
    if run:
        runs.append(b"".join(run))
    return runs


def _embed(raw_out: bytes, runs: list[bytes]) -> list[bytes]:
    """Find each run in ``raw_out``, in order, each at a line start; return the output lines
    between them (the ones written anew)."""
    new = []
    pos = 0
    for run in runs:
        found = raw_out.find(run, pos)
        while found > 0 and raw_out[found - 1] != 10:
            found = raw_out.find(run, found + 1)
        assert found >= 0, f"encoded lines rewritten though unchanged: {lines(run)[0][:80]!r}"
        new += lines(raw_out[pos:found])
        pos = found + len(run)
    return new + lines(raw_out[pos:])
