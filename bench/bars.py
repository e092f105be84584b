"""One line per SPEC 11 bar, for ``bench/run_all.py`` to gather into a single table.

Every benchmark prints its own details for people; ``bar`` adds a tab-separated line that
starts with ``BAR`` so the runner can pick the verdicts out of the output.
"""

from __future__ import annotations


def bar(what: str, measured: str, target: str, passed: bool) -> None:
    """Print one bar's verdict: what was measured, the figure, the bar, PASS or FAIL."""
    print(f"BAR\t{what}\t{measured}\t{target}\t{'PASS' if passed else 'FAIL'}", flush=True)
