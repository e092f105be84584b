"""Cheap pre-checks for case-insensitive regexes: the literal words a pattern cannot match
without, so that a rule whose words are all absent from a text is skipped without running its
regex. Substring tests are an order of magnitude cheaper than a search through a regex of
many alternatives, and most rules do not apply to most texts.

The pre-check may say "maybe" when the regex does not match (the regex then decides), never
"no" when it does: a pattern whose words cannot be found with certainty gets no pre-check.
"""

from __future__ import annotations

import re

try:  # the regex parser of the standard library; private, so its absence only costs speed
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser
except ImportError:  # pragma: no cover - a Python without them runs every regex
    _sre_parser = _sre_constants = None

# Shortest literal worth a pre-check: shorter ones are found in almost every text.
MIN_LITERAL = 3

# The only non-ASCII characters that re.IGNORECASE matches to ASCII letters (Python's re
# documentation, IGNORECASE): mapped before lowering so that the pre-check sees what the regex
# sees. "İ".lower() would otherwise become "i" plus a combining dot and hide the "i".
_ASCII_FOLD = str.maketrans({"İ": "i", "ı": "i", "ſ": "s", "K": "k"})


def fold(text: str) -> str:
    """The text as the pre-checks look at it."""
    return text.translate(_ASCII_FOLD).lower()


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Literals, one of which every case-insensitive match of ``pattern`` contains, in folded
    form; None when an alternative of the pattern has none."""
    if _sre_parser is None:
        return None
    try:
        parsed = _sre_parser.parse(pattern, re.IGNORECASE)
    except Exception:  # any trouble parsing: no pre-check, the regex decides
        return None
    if (parsed.state.flags & re.VERBOSE) or len(parsed.data) == 0:
        return None
    items = list(parsed.data)
    branches = [items]
    if len(items) == 1 and items[0][0] is _sre_constants.BRANCH:
        branches = [list(branch.data) for branch in items[0][1][1]]
    literals = []
    for branch in branches:
        literal = _longest_literal_run(branch)
        if literal is None:
            return None
        literals.append(literal)
    return tuple(dict.fromkeys(literals))


def _longest_literal_run(items: list) -> str | None:
    """The longest run of plain ASCII characters the branch must match, one after another."""
    best, run = "", []
    for op, value in [*items, (None, None)]:
        if op is _sre_constants.LITERAL and value < 128:
            run.append(chr(value))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    return best.lower() if len(best) >= MIN_LITERAL else None
