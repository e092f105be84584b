"""Test-wide set-up: library loggers write warnings and up to stderr, as the CLI does."""

import logging
import sys

from smtpapi_milter import logs

logs.configure(stream=sys.stderr, level=logging.WARNING, json=True)
