"""Test-wide set-up: library loggers write warnings and up to stderr, as the CLI does; one
private PostgreSQL server for the whole session, shared by every test module that needs it;
the tests skipped for want of the corpus reported in one line, not one per test."""

import logging
import sys
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from smtpapi_milter import logs

from . import corpus
from .harness.postgres import PostgresServer

logs.configure(stream=sys.stderr, level=logging.WARNING, json=True)


@pytest.fixture()
def info_logs() -> Iterator[list[dict]]:
    """Log entries down to INFO (the test-wide level is WARNING), captured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


# The outcome category of a corpus skip: `-ra` lists the "skipped" category reason by reason,
# which would be a screenful of the same reason; this one shows only in the counts line and
# in the one line pytest_terminal_summary writes.
NO_CORPUS = "skipped (no corpus)"


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
    if report.skipped and corpus.SKIP_REASON in str(reason):
        return NO_CORPUS, "s", "SKIPPED (no corpus)"
    return None


def pytest_terminal_summary(terminalreporter) -> None:
    skipped = len(terminalreporter.stats.get(NO_CORPUS, []))
    if skipped:
        terminalreporter.write_line(
            f"{skipped} tests need the corpus and were skipped (none at {corpus.CORPUS}): "
            "set SMTPAPI_CORPUS=/path/to/corpus (make test CORPUS=/path/to/corpus) to run "
            "them; the corpus-wide ones then run once per file.",
            yellow=True,
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server, started on first use and removed after the session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture()
def postgres_running(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The session server, started again after the test if the test stopped it."""
    yield postgres
    if not postgres.running:
        postgres.start()
