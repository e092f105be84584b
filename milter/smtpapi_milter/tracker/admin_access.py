"""Who may use the admin listener: a bearer token, and only under names we answer to.

The admin listener serves every recipient's events and erases them, so it is never open:

- **Token.** ``[engagement_tracker] admin_token`` when configured; otherwise a random token
  kept in ``state_dir/admin-token`` (mode 0600, owned by the user the tracker runs as),
  created on first start. Listening on loopback is no protection on a machine with other
  local users (``nobody`` can connect to 127.0.0.1 too), so loopback gets no exemption.
- **Host.** A browser lets any web page send requests to a name the page's author controls;
  by pointing that name at 127.0.0.1 (DNS rebinding) the page becomes same-origin with the
  admin listener and could read the API, token or not, if the operator's browser holds the
  token. The ``Host`` header still carries the attacker's name, so requests are refused unless
  it names a loopback literal (127.0.0.1, [::1], localhost), the host of ``admin_listen``
  itself, or one of ``admin_hosts``. The answer is 421 Misdirected Request (RFC 9110 15.5.20):
  "this server is not authoritative for that name" is what is wrong, not the credentials.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..config import Config, ConfigError
from ..secret_file import publish_once

TOKEN_FILE_NAME = "admin-token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "[::1]", "localhost"})
# Addresses that mean "every interface": a Host header never legitimately names them.
_WILDCARDS = frozenset({"0.0.0.0", "[::]", ""})


def token_file(config: Config) -> Path:
    """Where the generated admin token lives (used only when none is configured)."""
    return Path(config.state_dir) / TOKEN_FILE_NAME


def describe_token(config: Config) -> str:
    """For ``check``: where the admin token comes from (never the token itself)."""
    if config.engagement_tracker.admin_token:
        return "configured ([engagement_tracker] admin_token)"
    path = token_file(config)
    if path.exists():
        read_token_file(path)  # a file the tracker would refuse is reported now
        return f"file {path}"
    return f"file {path} (created on first start)"


def admin_token(config: Config, create: bool = True) -> str:
    """The token the admin listener requires: the configured one, else the token file's.

    With ``create`` a missing file is made with a fresh random token; concurrent first
    starts end up sharing one token. ConfigError names the file when it cannot be used.
    """
    if config.engagement_tracker.admin_token:
        return config.engagement_tracker.admin_token
    path = token_file(config)
    try:
        return read_token_file(path)
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"{path}: no admin token file (created on first start)") from None
    try:
        publish_once(path, secrets.token_urlsafe(32).encode() + b"\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the admin token file: {exc.strerror}") from None
    return read_token_file(path)


def read_token_file(path: Path) -> str:
    """The token in ``path``; FileNotFoundError is left to the caller."""
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_mode & 0o077:
                raise ConfigError(
                    f"{path}: admin token file is readable or writable by group or others "
                    "(chmod 600 it)"
                )
            token = file.read().decode("ascii").strip()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: admin token file is not ASCII text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(f"{path}: admin token file must hold one token of 16+ characters")
    return token


def _host_name(hostport: str) -> str:
    """The name part of a ``Host`` header or listen address, lower-case, port dropped;
    "" when it is no ``name[:port]`` (a port that is no number, a lone bracket)."""
    hostport = hostport.strip().lower()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return ""
        name, rest = hostport[: end + 1], hostport[end + 1 :]
    else:
        name, colon, port = hostport.partition(":")
        rest = colon + port
    port = rest[1:]
    if rest and (rest[0] != ":" or not (port == "" or (port.isascii() and port.isdigit()))):
        return ""
    # "localhost." is the same DNS name as "localhost".
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def check_host_names(config: Config) -> None:
    """Refuse ``admin_hosts`` entries that are no host name (before anything starts)."""
    for i, name in enumerate(config.engagement_tracker.admin_hosts):
        if not name or _host_name(name) != name.lower().rstrip(".") or "/" in name:
            raise ConfigError(
                f"{config.source}: 'engagement_tracker.admin_hosts[{i}]' must be a host name "
                f"without port or scheme, not {name!r}"
            )


class AllowedHosts:
    """Whether a request's ``Host`` header names this admin listener (see the module doc)."""

    def __init__(self, admin_listen: str, admin_hosts: list[str]):
        names = set(LOOPBACK_NAMES)
        names.update(_host_name(name) for name in admin_hosts)
        names.add(_host_name(admin_listen.rpartition(":")[0]))
        self.names = frozenset(names - _WILDCARDS)

    @classmethod
    def from_config(cls, config: Config) -> AllowedHosts:
        tracker = config.engagement_tracker
        return cls(tracker.admin_listen, tracker.admin_hosts)

    def __call__(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == b"host":
                return _host_name(value.decode("latin-1")) in self.names
        return False  # HTTP/1.0 without Host: no browser sends that, nor needs to
