"""Test-wide set-up: library loggers write warnings and up to stderr, as the CLI does."""

import logging
import sys
from collections.abc import Iterator

import pytest

from smtpapi_milter import logs

from .harness.postgres import PostgresServer

logs.configure(stream=sys.stderr, level=logging.WARNING, json=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session; tests create their own databases."""
    with PostgresServer() as server:
        yield server
