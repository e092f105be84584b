"""Reading policy code so that what runs is exactly what was checked (SPEC 3).

Policies run as the milter's user, so a policy file is as powerful as that user: only root
or that user may be able to change it, or anything on the way to it. Checking a path and then
importing it by path is racy (the file, or a directory above it, can be swapped between the
check and the import), and ``stat`` follows symbolic links. So the directory is walked from
``/`` one component at a time with ``O_NOFOLLOW``, each open directory is checked with
``fstat``, each policy is opened relative to its directory's descriptor with ``O_NOFOLLOW``
and checked with ``fstat``, and its bytes are read from that descriptor. The caller compiles
those bytes: nothing is opened by path again.

The rule, for the file and for every directory from ``/`` down: owned by root or by the
user the milter runs as (the effective uid), and not writable by group or others. A
world-writable directory with the sticky bit owned by root (``/tmp``) is accepted as an
ancestor: there nobody can rename or remove an entry owned by someone else, and a directory
someone else created in it is refused by its owner. Symbolic links in the configured
directory's own path are resolved once, before the walk (``/etc`` may be a link on some
systems); the walk then checks where they lead. A policy file that is a symbolic link is
refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a policy's name must not hang the load.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_POLICY_BYTES = 16 * 1024 * 1024


class UntrustedPolicy(Exception):
    """A policy file or a directory above it fails the ownership/permission rule, or is a
    symbolic link; the message names it and says how to fix it."""


@dataclass(frozen=True)
class PolicySource:
    """The checked bytes of one policy file."""

    name: str  # the file name, e.g. "10-auth.py"
    path: str  # for messages and tracebacks only: the code is in ``source``
    source: bytes


def read_policy_directory(directory: Path) -> list[PolicySource] | None:
    """The ``*.py`` files of ``directory`` in name order, each read and checked; None if
    the directory does not exist. UntrustedPolicy, NotADirectoryError or OSError otherwise."""
    try:
        real = Path(os.path.realpath(directory, strict=True))
    except FileNotFoundError:
        return None
    if not real.is_dir():
        raise NotADirectoryError(f"{directory}: not a directory")
    dir_fd = _open_checked_directory(real)
    try:
        names = sorted(
            name for name in os.listdir(dir_fd) if name.endswith(".py") and not name.startswith(".")
        )
        return [_read_policy(dir_fd, real, name) for name in names]
    finally:
        os.close(dir_fd)


def _open_checked_directory(real: Path) -> int:
    """A descriptor of ``real`` (absolute, no links), every directory down to it checked."""
    fd = os.open("/", _DIRECTORY_FLAGS)
    try:
        _check_directory(fd, Path("/"))
        here = Path("/")
        for part in real.parts[1:]:
            here = here / part
            try:
                child = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                # ELOOP (or ENOTDIR): a link was put there since the path was resolved.
                raise UntrustedPolicy(
                    f"{here}: cannot open as a directory: {exc.strerror}"
                ) from exc
            os.close(fd)
            fd = child
            _check_directory(fd, here)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_directory(fd: int, path: Path) -> None:
    st = os.fstat(fd)
    _check_owner(st, path)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        sticky_root = st.st_mode & stat.S_ISVTX and st.st_uid == 0
        if not sticky_root:
            raise UntrustedPolicy(
                f"{path}: refused as a policy directory or its parent, writable by group or "
                f"others (chmod go-w {path}): whoever can write it can replace the policies"
            )


def _read_policy(dir_fd: int, directory: Path, name: str) -> PolicySource:
    path = directory / name
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if os.path.islink(path):
            raise UntrustedPolicy(
                f"{path}: refused, a symbolic link (copy the file into {directory})"
            ) from exc
        raise UntrustedPolicy(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedPolicy(f"{path}: refused, not a regular file")
        _check_owner(st, path)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UntrustedPolicy(
                f"{path}: refused, writable by group or others (chmod go-w {path})"
            )
        if st.st_size > MAX_POLICY_BYTES:
            raise UntrustedPolicy(f"{path}: refused, larger than {MAX_POLICY_BYTES} bytes")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            source = stream.read(MAX_POLICY_BYTES + 1)
        if len(source) > MAX_POLICY_BYTES:  # it grew after fstat
            raise UntrustedPolicy(f"{path}: refused, larger than {MAX_POLICY_BYTES} bytes")
    finally:
        os.close(fd)
    return PolicySource(name, str(path), source)


def _check_owner(st: os.stat_result, path: Path) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise UntrustedPolicy(
            f"{path}: refused, owned by uid {st.st_uid}, not root or the uid the milter runs "
            f"as ({os.geteuid()}): chown it"
        )
