"""Socket activation: the listening socket systemd passes, relayed to the libmilter worker.

libmilter cannot adopt an inherited socket. ``smfi_setconn`` takes only a connection string;
``mi_milteropen`` creates, binds and listens on a new socket and keeps it in a static variable
no API can set; so a descriptor from systemd (``LISTEN_FDS``, the sd_listen_fds protocol)
never reaches it. Instead the supervisor keeps the passed socket, runs the worker on a private
unix socket, and copies each accepted connection's bytes both ways. The price is one local
hop per MTA connection (an SMTP session's worth of milter traffic); the gain is what socket
activation is for: the socket exists before the MTA starts and outlives worker restarts, so
connections wait in the backlog (the relay retries the worker) instead of being refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger("smtpapi_milter.milter")

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed descriptors start here
CHUNK = 64 * 1024
WORKER_WAIT = 30.0  # seconds a connection waits for a (re)starting worker before giving up


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (none without socket activation).

    As sd_listen_fds(3) with unset_environment: the variables are only honoured when
    LISTEN_PID names this process, and are removed so no child takes them for its own. The
    descriptors are made close-on-exec: only the supervisor holds them.
    """
    environ = os.environ if environ is None else environ
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


class Relay:
    """Accepts on ``listener`` and joins each connection to the worker's unix socket."""

    def __init__(self, listener: socket.socket, worker_path: str, worker_wait: float = WORKER_WAIT):
        self.listener = listener
        self.worker_path = worker_path
        self.worker_wait = worker_wait
        self._stopping = threading.Event()

    def start(self) -> Relay:
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop accepting; connections in progress finish with the worker."""
        self._stopping.set()

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.5)  # wake up now and then to notice stop()
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                log.error("relay accept failed", error=str(exc))
                time.sleep(0.5)  # e.g. out of descriptors: back off, keep serving
                continue
            client.settimeout(None)
            threading.Thread(target=self._join, args=(client,), daemon=True).start()

    def _connect_worker(self) -> socket.socket | None:
        deadline = time.monotonic() + self.worker_wait
        while True:
            worker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                worker.connect(self.worker_path)
                return worker
            except OSError:
                worker.close()
                if time.monotonic() >= deadline or self._stopping.is_set():
                    return None
                time.sleep(0.05)  # the worker is (re)starting: its socket is not there yet

    def _join(self, client: socket.socket) -> None:
        with client:
            worker = self._connect_worker()
            if worker is None:
                log.error("relay: milter worker unreachable", socket=self.worker_path)
                return  # the MTA applies its milter default action (tempfail)
            with worker:
                upstream = threading.Thread(target=_copy, args=(client, worker), daemon=True)
                upstream.start()
                _copy(worker, client)
                upstream.join()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    """Copy until end of stream, then pass the end on (half-close) so the peer sees it too."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass  # a reset on either side ends this direction; the other one notices by itself
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
