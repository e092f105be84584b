"""Moved to smtpapi_milter.sandbox.postfix; kept so older imports still work."""

from smtpapi_milter.sandbox.postfix import *  # noqa: F403
