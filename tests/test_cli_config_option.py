"""`--config FILE` is accepted before the subcommand as well as after it, through the real CLI
(`smtpapi-milter --config X check` was refused by argparse)."""

from __future__ import annotations

import subprocess
import sys

from .harness.smtpapi import ROOT, toml

CLI = [sys.executable, "-m", "smtpapi_milter.cli"]
ENV = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"}


def config(directory, name: str):
    (directory / "policies").mkdir(exist_ok=True)
    (directory / "state").mkdir(exist_ok=True)
    path = directory / name
    path.write_text(
        toml(
            {"policy": {"directory": str(directory / "policies")}},
            {"state_dir": str(directory / "state")},
        )
    )
    return path


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=ENV, timeout=60, check=False
    )


def test_config_before_the_subcommand(tmp_path):
    first = config(tmp_path, "first.toml")
    result = check("--config", str(first), "check")
    assert result.returncode == 0, result.stderr
    assert f"# effective configuration from {first}" in result.stdout


def test_the_subcommands_config_wins_when_both_are_given(tmp_path):
    first, second = config(tmp_path, "first.toml"), config(tmp_path, "second.toml")
    result = check("--config", str(first), "check", "--config", str(second))
    assert result.returncode == 0, result.stderr
    assert f"# effective configuration from {second}" in result.stdout


def test_a_bad_config_before_the_subcommand_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtpapi]\nno_such_key = 1\n")
    result = check("--config", str(bad), "check")
    assert result.returncode != 0
    assert str(bad) in result.stderr and "no_such_key" in result.stderr
