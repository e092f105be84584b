"""Other vendors' SMTP headers (SPEC 15): SendGrid's X-SMTPAPI, Mailgun's X-Mailgun-*,
Postmark's X-PM-*, read onto the same settings as X-MSYS-API so that applications written for
those services work unchanged. ``registry.read`` is the one entry point."""

from .registry import FAMILY_NAMES, HeadersRead, field_deletions, read

__all__ = ["FAMILY_NAMES", "HeadersRead", "field_deletions", "read"]
