"""A private PostgreSQL server for tests: Debian's server binaries in a throw-away directory.

The shared event store has to be proven against the real thing (SPEC 10), so the tests start
their own server instead of relying on one that may or may not run on the machine: ``initdb``
into a fresh directory, listen on 127.0.0.1 at a free port, trust authentication, ``fsync`` on
(durability tests mean nothing without it). PostgreSQL refuses to run as root, so under root
the server runs as the ``postgres`` system user in a directory handed over to it.

Missing server binaries are an error, never a skip: a skipped PostgreSQL test would hide a
machine (or a CI image) that never installed PostgreSQL. ``make deps`` installs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
DATABASE = "events"
START_TIMEOUT = 60.0


class PostgresHarnessError(RuntimeError):
    """The test PostgreSQL could not be set up; the message says what to do about it."""


def server_bin_dir(root: Path = PG_ROOT) -> Path:
    """The ``bin`` directory of the newest PostgreSQL server installed the Debian way."""
    found = []
    for bin_dir in root.glob("*/bin"):
        version = tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())
        if version and (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            found.append((version, bin_dir))
    if not found:
        raise PostgresHarnessError(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found under {root}/*/bin: "
            "install the Debian package 'postgresql' (make deps does)"
        )
    return max(found)[1]


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One private server: ``with PostgresServer() as pg: pg.url`` ... stopped and removed after.

    ``stop()`` and ``start()`` may be called in between (tests of an outage); the port and the
    data survive a restart.
    """

    def __init__(self, parent: str | Path = "/tmp"):
        self.bin = server_bin_dir()
        self._as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="smtpapi-pg-", dir=parent))
        # mkdtemp makes 0700 directories; the server user must be able to enter this one.
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.ready_seconds = 0.0
        self.running = False

    @property
    def url(self) -> str:
        """The URL of the ``events`` database, as the store's configuration would give it."""
        return self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PostgresServer:
        try:
            self.init()
            self.start()
            self.create_database(DATABASE)
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def init(self) -> None:
        """Create the cluster: UTF-8, C locale, trust auth on the socket and 127.0.0.1."""
        self.sockets.mkdir()
        self._hand_over(self.dir, self.sockets)
        # --no-sync only skips flushing the freshly created files; the server runs fsync=on.
        self._run(
            [self.bin / "initdb", "-D", self.data, "-U", SERVER_USER, "-E", "UTF8"]
            + ["--no-locale", "--no-sync", "--auth=trust"]
        )
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# smtpapi-milter tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="utf-8"
        )

    def start(self) -> float:
        """Start the server and wait until it accepts connections; returns the seconds taken."""
        began = time.monotonic()
        result = self._run(
            [self.bin / "pg_ctl", "start", "-D", self.data, "-l", self.log, "-w"]
            + ["-t", str(int(START_TIMEOUT)), "-o", f"-p {self.port}"],
            check=False,
        )
        if result.returncode != 0:
            raise PostgresHarnessError(
                f"pg_ctl start failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log:\n{self.log_tail()}"
            )
        self.running = True
        self._wait_ready(began + START_TIMEOUT)
        self.ready_seconds = time.monotonic() - began
        return self.ready_seconds

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as when an operator stops the database."""
        self._run([self.bin / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w"])
        self.running = False

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file it had."""
        if self.running:
            with suppress(PostgresHarnessError, subprocess.SubprocessError):
                self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, deadline: float) -> None:
        # pg_ctl -w has already seen the postmaster report "ready"; a real connection proves
        # that the TCP listener and authentication work too.
        while True:
            try:
                with psycopg.connect(self.database_url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresHarnessError(
                        f"PostgreSQL on port {self.port} not ready: {exc}\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def _hand_over(self, *paths: Path) -> None:
        if not self._as_root:
            return
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise PostgresHarnessError(
                f"no '{SERVER_USER}' system user to run PostgreSQL as (PostgreSQL refuses "
                "root): install the Debian package 'postgresql'"
            ) from exc
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)
        for parent in self.dir.parents:
            if not parent.stat().st_mode & 0o001:
                raise PostgresHarnessError(
                    f"{parent} is closed to other users, so '{SERVER_USER}' cannot reach "
                    f"{self.dir}: give running_postgres() a parent such as /tmp"
                )

    def _run(self, argv: list[str | Path], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(arg) for arg in argv]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if check and result.returncode != 0:
            raise PostgresHarnessError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\nserver log:\n{self.log_tail()}"
            )
        return result


@contextmanager
def running_postgres(parent: str | Path = "/tmp") -> Iterator[str]:
    """A running private server for the duration of the block; yields the ``events`` URL.

    ``parent`` must be open to the server user (pytest's own tmp_path is not, as root).
    """
    with PostgresServer(parent) as server:
        yield server.url
