"""Test-wide set-up: library loggers write warnings and up to stderr, as the CLI does; one
private PostgreSQL server for the whole session, shared by every test module that needs it."""

import logging
import sys
from collections.abc import Iterator

import pytest

from smtpapi_milter import logs

from .harness.postgres import PostgresServer

logs.configure(stream=sys.stderr, level=logging.WARNING, json=True)


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
