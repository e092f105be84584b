"""Operator commands (``events``, ``erase``) against the service's own event store.

An operator runs them as root, often without ``--config``. They used to open the store the
way the services do, creating what was missing: ``/var/lib/smtpapi-milter`` and an empty
``events.sqlite3``, owned by root, which the service (user ``smtpapi``) could then not write
(``Permission denied`` on the writer lock, the tracker answering 503). So:

- they never create a store: a SQLite file that does not exist is reported, and the command
  fails (exit 4) rather than printing an empty result, because the usual cause is the wrong
  configuration (no ``--config``: the defaults) and "no events" would hide that;
- run as root against an existing SQLite store, they act as the store's owner: the process
  gives up root for the database file's uid and gid before opening it, so whatever SQLite or
  the store creates beside it (-wal, -shm, the writer lock, anything a later release adds)
  belongs to the service, as if the service had made it.

PostgreSQL stores keep no local files: nothing to do for them.

``rewrite`` needs the link key and makes the default one when it is missing; as root, in a
state directory another user owns, it refuses instead (a root-owned 0600 key is one the
service cannot read).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from .config import CONFIG_ENV, Config, ConfigError
from .tokens import KEY_FILE_NAME


class NoStore(Exception):
    """The configured SQLite event store does not exist (and is not to be created here)."""


def enter_store(config: Config) -> None:
    """Before an operator command opens the store: refuse a missing SQLite file; as root,
    become the file's owner."""
    url = config.event_store_url
    if not url.startswith("sqlite:"):
        return
    # Imported now, as root: the owner may not be able to read the Python installation.
    from .events.sqlite_store import sqlite_path

    try:
        database = sqlite_path(url)
    except ValueError as exc:
        raise NoStore(str(exc)) from None
    try:
        owner = database.stat()
    except FileNotFoundError:
        raise NoStore(
            f"no event store at {database} (nothing recorded there yet, or not the service's "
            f"configuration: pass --config FILE or set ${CONFIG_ENV}); nothing was created"
        ) from None
    if os.geteuid() == 0 and owner.st_uid != 0:
        become(owner.st_uid, owner.st_gid)


def become(uid: int, gid: int) -> None:
    """Give up root for ``uid`` / ``gid`` (and the user's groups), for good."""
    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


def refuse_root_key(config: Config) -> None:
    """ConfigError if root would create the default link key in another user's state dir."""
    tracker = config.engagement_tracker
    if os.geteuid() != 0 or tracker.keys or tracker.key_file:
        return
    state_dir = Path(config.state_dir)
    try:
        owner = state_dir.stat().st_uid
    except OSError:
        return  # no state directory: nobody else's to spoil
    if owner != 0 and not (state_dir / KEY_FILE_NAME).exists():
        raise ConfigError(
            f"{config.source}: no link key in {state_dir} yet, and root will not create one "
            f"there for its owner uid {owner}: start the service once (it creates the key) "
            "or run this command as that user"
        )
