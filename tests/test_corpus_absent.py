"""A clone without the corpus (it lives outside the repo, in ../shared/corpus) still passes:
the tests that need it skip, reported in one line that says how to run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_without_the_corpus_its_tests_skip_in_one_line(tmp_path):
    env = dict(os.environ, SMTPAPI_CORPUS=str(tmp_path / "no-corpus"))
    env.pop("SMTPAPI_REQUIRE_CORPUS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["tests/test_corpus.py", "tests/test_mime.py", "tests/test_html_scan.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if "need the corpus" in line]
    assert len(lines) == 1, run.stdout
    assert "SMTPAPI_CORPUS=" in lines[0] and str(tmp_path / "no-corpus") in lines[0]
    # -ra (setup.cfg) must not list the same reason once per test.
    assert "SKIPPED [" not in run.stdout, run.stdout
    # The project's own fixtures in those files still ran.
    assert " passed" in run.stdout.splitlines()[-1], run.stdout


def test_a_ci_run_can_require_the_corpus(tmp_path):
    env = dict(os.environ, SMTPAPI_CORPUS=str(tmp_path / "no-corpus"), SMTPAPI_REQUIRE_CORPUS="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["tests/test_corpus.py::test_corpus_is_present"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "corpus not found" in run.stdout, run.stdout
