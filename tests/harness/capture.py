"""Moved to smtpapi_milter.sandbox.capture; kept so older imports still work."""

from smtpapi_milter.sandbox.capture import *  # noqa: F403
