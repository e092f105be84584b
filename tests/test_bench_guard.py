"""bench/bars.py refuses to measure a tree whose compiled helpers were never built."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

from .harness.smtpapi import ROOT


@pytest.fixture
def bars(monkeypatch):
    monkeypatch.setenv("SMTPAPI_PURE_PYTHON", "1")  # importing it checks this tree's helpers
    spec = importlib.util.spec_from_file_location("bars", ROOT / "bench" / "bars.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("SMTPAPI_PURE_PYTHON")
    return module


def test_a_helper_without_its_built_module_is_named(bars, tmp_path):
    for name in ("jsonnum", "textrun", "tokenmint"):
        (tmp_path / f"{name}.c").write_text("/* source */\n")
    (tmp_path / f"textrun{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert bars.missing_compiled_helpers(tmp_path) == ["jsonnum", "tokenmint"]
    with pytest.raises(SystemExit) as exited:
        bars.require_compiled_helpers(tmp_path)
    message = str(exited.value.code)
    assert str(tmp_path) in message and "jsonnum, tokenmint" in message
    assert "make venv" in message and "SMTPAPI_PURE_PYTHON=1" in message


def test_every_helper_built_or_the_references_asked_for_pass(bars, tmp_path, monkeypatch):
    (tmp_path / "tokenmint.c").write_text("/* source */\n")
    (tmp_path / f"tokenmint{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    bars.require_compiled_helpers(tmp_path)
    (tmp_path / "textrun.c").write_text("/* source */\n")
    monkeypatch.setenv("SMTPAPI_PURE_PYTHON", "1")
    bars.require_compiled_helpers(tmp_path)  # measured on purpose: no exit


def test_this_trees_helpers_are_built():
    """What `make test` installs is what `make bench` measures."""
    run = subprocess.run(
        [sys.executable, "-c", "import bars"],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
