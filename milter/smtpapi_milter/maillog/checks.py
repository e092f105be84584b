"""What ``check`` and a start refuse in ``[maillog]`` (called from preflight.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..delivery.bounce_class import BounceClassifier, BounceRulesError


def check(config: Config, user: Any) -> None:
    """ConfigError naming the file, key and value for a follower that could not run."""
    settings = config.maillog
    if not settings.source:
        return
    try:
        BounceClassifier.load(settings.bounce_rules or None)
    except BounceRulesError as exc:
        raise ConfigError(f"{config.source}: 'maillog.bounce_rules': {exc}") from None
    if settings.source == "journald":
        try:
            import systemd.journal  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{config.source}: 'maillog.source' = \"journald\" needs the systemd Python "
                "bindings (pip package systemd-python, Debian python3-systemd): install them "
                "or name the MTA's log file"
            ) from None
        return
    path = Path(settings.source)
    if not path.parent.is_dir():
        raise ConfigError(
            f"{config.source}: 'maillog.source' {settings.source!r}: directory {path.parent} "
            "does not exist"
        )
    if path.exists() and (path.is_dir() or not user.may(path, os.R_OK)):
        raise ConfigError(
            f"{config.source}: 'maillog.source' {settings.source!r} is not a file {user} may "
            "read (Debian's /var/log/mail.log is readable by group adm)"
        )
