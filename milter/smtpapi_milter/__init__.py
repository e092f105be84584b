"""smtpapi-milter: Momentum-compatible SMTP engagement tracking for Postfix and Sendmail.

The message pipeline (X-MSYS-API parsing, policies, settings, rewrite, tokens) lives in
this package and knows nothing about libmilter; ``mta/`` and ``cli`` are thin front ends.
"""

__version__ = "0.1.0"
