"""What a start refuses, checked before anything starts: one function for ``check`` and for
``milter``, ``tracker`` and ``run``.

``check`` used to say "configuration OK" for settings that then failed at start (a state
directory the service cannot write, a unix socket in a missing directory): the two walked
different code. Here is the one walk. It reads, it never creates (no directory, no key
file, no database) and never binds: a running service holds its ports, and ``check`` must
still pass beside it.

Permissions are judged for the user the service runs as, which under the shipped units is
the owner of the state directory (tmpfiles.d and StateDirectory= give it to ``smtpapi``).
``check`` judges for that owner whoever runs it (root, or an operator in the service's
group). A start judges for the user starting, except root: root could write anything, and
what a service started as root would create in another user's state directory is what
broke services before, so a start as root is judged for the owner too. With no state
directory yet, for the caller: whoever starts first creates it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

import structlog

from .addresses import milter_socket
from .config import Config, ConfigError
from .config_advice import advice
from .policy import PolicySet
from .tokens import KEY_FILE_NAME, TokenCodec

log = structlog.get_logger("smtpapi_milter.preflight")

SERVICES = ("milter", "tracker", "maillog")
# Files SQLite and our writer lock keep beside the database (sqlite_store.py).
SQLITE_COMPANIONS = ("", "-wal", "-shm", ".writer-lock")


def validate(
    config: Config, services: Iterable[str] = SERVICES, *, starting: bool = False
) -> PolicySet:
    """Raise ConfigError (naming file, key and value) for what would stop ``services``
    from starting; return the policies (none loaded unless the milter is among them).

    ``starting``: called by the services themselves rather than by ``check`` (see above).
    """
    services = set(services)
    user = ServiceUser.for_state_dir(Path(config.state_dir), starting)
    policies = PolicySet.empty()
    if "milter" in services:
        policies = PolicySet.load(config.policy.directory)
        _check_milter_socket(config, user)
    if "tracker" in services:
        from .tracker.server import check as check_tracker  # the tracker's own rules

        check_tracker(config)
    if "maillog" in services:
        from .maillog.checks import check as check_maillog  # [maillog], when it is on

        check_maillog(config, user)
    _check_keys(config, user)
    _check_sqlite_store(config, user)
    if starting and "milter" in services:  # check prints them itself
        for line in advice(config):
            log.warning("configuration advice", advice=line)
    return policies


class ServiceUser:
    """The uid and groups permissions are judged for (see the module docstring)."""

    def __init__(self, uid: int):
        self.uid = uid
        try:
            entry = pwd.getpwuid(uid)
            self.name = entry.pw_name
            self.gids = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except KeyError:
            self.name, self.gids = str(uid), set()

    @classmethod
    def for_state_dir(cls, state_dir: Path, starting: bool) -> ServiceUser:
        uid = os.geteuid()
        if uid == 0 or not starting:
            with contextlib.suppress(OSError):  # no state directory: the caller
                uid = state_dir.stat().st_uid
        return cls(uid)

    def __str__(self) -> str:
        return f"user {self.name} (uid {self.uid})"

    def may(self, path: Path, mode: int) -> bool:
        """Whether this user may access ``path`` with ``mode`` (os.R_OK | os.W_OK | os.X_OK)."""
        if self.uid == os.geteuid():
            return os.access(path, mode)
        if self.uid == 0:
            return True
        info = path.stat()
        if info.st_uid == self.uid:
            shift = 6
        elif info.st_gid in self.gids:
            shift = 3
        else:
            shift = 0
        return (info.st_mode >> shift) & mode == mode


def _check_keys(config: Config, user: ServiceUser) -> None:
    tracker = config.engagement_tracker
    default = Path(config.state_dir) / KEY_FILE_NAME
    if not tracker.keys and not tracker.key_file and not default.exists():
        # Created on first start (tokens.py): its directory must let the service do that.
        _check_directory(config, "state_dir", Path(config.state_dir), user)
        return
    paths = [Path(tracker.key_file)] if tracker.key_file else ([] if tracker.keys else [default])
    for path in paths:
        if path.exists() and not user.may(path, os.R_OK):
            raise ConfigError(
                f"{config.source}: link-token key file {path} is not readable by {user} "
                f"(owner uid {path.stat().st_uid}, mode {stat.filemode(path.stat().st_mode)})"
            )
    try:
        TokenCodec.from_config(config, create=False)
    except OSError as exc:
        raise ConfigError(f"{config.source}: link-token keys: {exc}") from None


def _check_sqlite_store(config: Config, user: ServiceUser) -> None:
    url = config.event_store_url
    if not url.startswith("sqlite:"):
        return  # PostgreSQL: a store that is down is answered with 4xx/503, not refused
    from .events.sqlite_store import sqlite_path

    key = "events.store" if config.events.store else "state_dir"
    try:
        database = sqlite_path(url)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: '{key}': {exc}") from None
    _check_directory(config, key, database.parent, user)
    for suffix in SQLITE_COMPANIONS:
        path = database.with_name(database.name + suffix)
        if path.exists() and not user.may(path, os.R_OK | os.W_OK):
            owner = path.stat().st_uid
            raise ConfigError(
                f"{config.source}: '{key}': {path} is not writable by {user} (it is owned by "
                f"{_user_name(owner)}, mode {stat.filemode(path.stat().st_mode)}); "
                f"chown {user.name}: {path}"
            )


def _check_directory(config: Config, key: str, directory: Path, user: ServiceUser) -> None:
    """``directory`` exists and ``user`` may create files in it, or ``user`` may create it."""
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(f"{config.source}: '{key}' {directory} is not a directory")
        if not user.may(directory, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{config.source}: '{key}' {directory} is not writable by {user} "
                f"(owned by {_user_name(directory.stat().st_uid)}, mode "
                f"{stat.filemode(directory.stat().st_mode)}): the services keep the link-token "
                "key and the SQLite event store there"
            )
        return
    ancestor = directory.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not user.may(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{config.source}: '{key}' {directory} does not exist and {user} cannot create it "
            f"({ancestor} is not writable): create it owned by that user"
        )


def _check_milter_socket(config: Config, user: ServiceUser) -> None:
    where = milter_socket(config.milter.socket)  # already validated by load_config
    if where.kind == "unix":
        directory = Path(where.path).parent
        if not directory.is_dir():
            raise ConfigError(
                f"{config.source}: 'milter.socket' {config.milter.socket}: directory "
                f"{directory} does not exist (the shipped units' RuntimeDirectory= creates "
                "/run/smtpapi-milter when the service starts)"
            )
        if not user.may(directory, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{config.source}: 'milter.socket' {config.milter.socket}: {user} cannot "
                f"create the socket in {directory}"
            )
        return
    try:
        family = socket.AF_INET6 if where.kind == "inet6" else socket.AF_INET
        socket.getaddrinfo(where.host, where.port, family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: 'milter.socket' {config.milter.socket}: host {where.host!r} "
            f"does not resolve ({exc.strerror or exc})"
        ) from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
