"""One line per SPEC 11 bar, for ``bench/run_all.py`` to gather into a single table.

Every benchmark prints its own details for people; ``bar`` adds a tab-separated line that
starts with ``BAR`` so the runner can pick the verdicts out of the output.

Every benchmark imports this module, so it is also where a run refuses to measure the wrong
code: the compiled helpers (milter/smtpapi_milter/_native/*.c) are built by ``pip install``
beside their sources and are not in git, so a tree that was never installed (a git worktree
of another commit, say) runs their pure-Python references instead, without a word. The
tracker measured that way from a worktree answered 8.5k clicks/s where the same code with its
helpers built answered 13.0k, which looked like a regression of the change under test.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[1] / "milter" / "smtpapi_milter" / "_native"


def bar(what: str, measured: str, target: str, passed: bool) -> None:
    """Print one bar's verdict: what was measured, the figure, the bar, PASS or FAIL."""
    print(f"BAR\t{what}\t{measured}\t{target}\t{'PASS' if passed else 'FAIL'}", flush=True)


def missing_compiled_helpers(directory: Path = NATIVE) -> list[str]:
    """The compiled helpers in ``directory`` (one ``.c`` source each) with no extension
    module built beside them."""
    built = {
        path.name[: -len(suffix)]
        for suffix in EXTENSION_SUFFIXES
        for path in directory.glob(f"*{suffix}")
    }
    return sorted(source.stem for source in directory.glob("*.c") if source.stem not in built)


def require_compiled_helpers(directory: Path = NATIVE) -> None:
    """Exit with the reason unless every compiled helper is built (or the references are
    asked for on purpose: SMTPAPI_PURE_PYTHON=1)."""
    if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":
        print("SMTPAPI_PURE_PYTHON=1: measuring the pure-Python references", flush=True)
        return
    missing = missing_compiled_helpers(directory)
    if missing:
        sys.exit(
            f"bench: compiled helpers not built in {directory}: {', '.join(missing)}. Their"
            " pure-Python references would be measured instead. Build them with `make venv`"
            " (or `pip install -e .` in this tree), or set SMTPAPI_PURE_PYTHON=1 to measure"
            " the references on purpose."
        )


require_compiled_helpers()
