"""README and packaging tell the truth about the program: every option a subcommand takes is in
README's command table, and the units describe what exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from smtpapi_milter.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Taken by every subcommand, documented once under the table.
COMMON = {"--help", "--config"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def table_row(command: str) -> str:
    rows = re.findall(rf"^\| `smtpapi-milter {command}\b.*$", README, re.M)
    assert len(rows) == 1, f"README's command table has {len(rows)} rows for {command}"
    return rows[0]


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_visible_option_is_in_the_command_table(command):
    row = table_row(command)
    for action in subcommands()[command]._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in set(action.option_strings) - COMMON:
            if option.startswith("--"):
                assert option in row, f"{command} {option} is not in README's command table"


def test_units_describe_what_exists():
    for unit in (ROOT / "packaging" / "systemd").iterdir():
        assert "being written" not in unit.read_text(), unit.name
