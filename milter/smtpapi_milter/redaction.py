"""Secrets kept out of what the program prints and logs: one place that knows what they are.

The configuration holds the admin token, link-signing keys, the database password (in
``[events] store``), webhook passwords, tokens and HMAC secrets, and URLs that carry an API
key in their query (``?apikey=``). ``check`` prints the effective settings, logs name the
store: both go through here. A secret shows as ``***``, so the reader still sees that it is
set (an empty one stays empty: "not set" is worth seeing too).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

HIDDEN = "***"
# Settings whose whole value is a secret, by key name (a *_file key names a path, not one).
_SECRET_KEY = re.compile(r"(?i)^(.*_)?(token|password|secret|hmac_secret)$")
# Query parameters that carry credentials: libpq's password=, and a webhook's apikey=,
# access_token=, sig=, ...
_SECRET_PARAM = re.compile(
    r"(?i)([?&][^=&#]*(pass|pwd|secret|token|key|auth|sig|credential)[^=&#]*=)[^&#]*"
)
_URL_KEYS = frozenset({"store", "url"})
_KEY_LIST_KEYS = frozenset({"keys"})  # "ID:SECRET" each: the id helps, the secret must not


def redact(url: str) -> str:
    """``url`` without its password and credential-like query values, for messages and logs."""
    # String edits, not urlunsplit: that would turn sqlite:////abs into sqlite://abs.
    netloc = urlsplit(url).netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(netloc, f"{userinfo.partition(':')[0]}:{HIDDEN}@{hostport}", 1)
    return _SECRET_PARAM.sub(rf"\1{HIDDEN}", url)


def redact_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of a settings table (nested tables and arrays of tables) with secrets hidden."""
    return {key: _redact_value(key, value) for key, value in settings.items()}


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return redact_settings(value)
    if isinstance(value, list):
        if key in _KEY_LIST_KEYS:
            return [f"{str(v).partition(':')[0]}:{HIDDEN}" for v in value]
        return [_redact_value(key, v) for v in value]
    if isinstance(value, str) and value:
        if _SECRET_KEY.match(key):
            return HIDDEN
        if key in _URL_KEYS:
            return redact(value)
    return value
