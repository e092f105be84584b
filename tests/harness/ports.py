"""Moved to smtpapi_milter.sandbox.ports; kept so older imports still work."""

from smtpapi_milter.sandbox.ports import *  # noqa: F403
