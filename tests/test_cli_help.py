"""Every command answers ``--help`` through the installed console script.

The commands are read from the argparse parser itself (nested subcommands too), so one added
later is covered without touching this file. Running the real entry point catches what an
import-time error or a broken ``[project.scripts]`` line would do to a shipped milter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpapi_milter.cli import build_parser

SCRIPT = Path(sys.executable).parent / "smtpapi-milter"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every command path under ``parser``: (), ("rewrite",), ("events", "sub"), ..."""
    yield path
    for action in parser._actions:  # argparse has no public view of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


COMMANDS = list(commands(build_parser()))


def test_the_walk_finds_the_subcommands():
    assert {("milter",), ("rewrite",), ("check",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "(top)")
def test_help(command):
    assert SCRIPT.exists(), f"{SCRIPT}: the console script is not installed (make venv)"
    result = subprocess.run(
        [str(SCRIPT), *command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(('smtpapi-milter', *command))}")
