"""A listening socket that cannot be opened is reported in one line: setting, address, why.

Granian reports a port in use as a Rust backtrace and libmilter as "cannot opensocket" (the
reason goes to syslog, if anywhere). So before either binds, the process about to listen
tries the address itself, the way they will (SO_REUSEADDR, nothing else), and a failure
becomes a ``ListenError``: the command prints it and exits with ``EXIT_CANNOT_LISTEN``,
which its supervisor counts towards the start limit (start_limit.py).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

EXIT_CANNOT_LISTEN = 5

REASONS = {
    errno.EADDRINUSE: "address already in use (another process listens there)",
    errno.EACCES: "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "no such address on this host",
}


class ListenError(Exception):
    """``setting`` (as the operator finds it in the file) could not listen on ``address``."""

    def __init__(self, setting: str, address: str, reason: str):
        super().__init__(f"cannot listen on {address} ({setting}): {reason}")
        self.setting, self.address, self.reason = setting, address, reason


def describe(exc: OSError) -> str:
    return REASONS.get(exc.errno or 0, exc.strerror or str(exc)).rstrip(".")


def check_tcp(setting: str, host: str, port: int, shown: str | None = None) -> None:
    """Raise ``ListenError`` unless ``host:port`` can be bound now (``shown``: the address
    as the configuration wrote it)."""
    address = shown or f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(setting, address, f"unknown host ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise ListenError(setting, address, describe(exc)) from None


def check_host_port(setting: str, address: str) -> None:
    """``HOST:PORT`` (the tracker's form, validated by its ``check``)."""
    host, _, port = address.rpartition(":")
    check_tcp(setting, host, int(port))


def check_milter_socket(setting: str, spec: str) -> None:
    """libmilter's ``inet:PORT@HOST``, ``inet6:PORT@HOST`` or ``unix:PATH``.

    A form this does not know is left to libmilter (the configuration's own check names
    bad forms); libmilter's failure is then reported by ``opensocket_failed``.
    """
    kind, _, where = spec.partition(":")
    if kind in ("unix", "local"):
        directory = Path(where).parent
        if not directory.is_dir():
            raise ListenError(setting, spec, f"no directory {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ListenError(setting, spec, f"permission denied on the directory {directory}")
        return
    found = re.fullmatch(r"(\d+)(?:@(.+))?", where)
    if kind in ("inet", "inet6") and found:
        default = "::" if kind == "inet6" else "0.0.0.0"  # libmilter's: every address
        check_tcp(setting, found[2] or default, int(found[1]), shown=spec)


def opensocket_failed(setting: str, spec: str) -> ListenError:
    """libmilter's own refusal, which says no more than that."""
    return ListenError(setting, spec, "libmilter could not open it (its reason is in syslog)")


def granian_failed(setting: str, address: str, exc: RuntimeError) -> ListenError | None:
    """Granian's bind error (a RuntimeError ending in ``(os error N)``), if it is one."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found is None:
        return None
    code = int(found[1])
    return ListenError(setting, address, describe(OSError(code, os.strerror(code))))
