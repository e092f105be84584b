"""Our milter as a real process for end-to-end tests: its own config, state dir and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from smtpapi_milter.cli import toml_value
from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_http, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def toml(sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM ``process`` (started with start_new_session) and wait; SIGKILL its whole
    group if it has not ended within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class RunningService:
    """An ``smtpapi-milter`` subcommand as a real process with its own config and state dir.

    Subclasses name the subcommand, choose their ports (``_configure``) and say when the
    process is ready (``_wait_ready``).
    """

    command = ""
    # Directories searched before the project's (a benchmark's sitecustomize.py, say).
    python_path: tuple[Path, ...] = ()

    def __init__(self, workdir: Path, **sections: dict[str, Any]):
        self.workdir = workdir
        self.policy_dir = workdir / "policies"
        self.policy_dir.mkdir(exist_ok=True)
        self.config_path = workdir / "smtpapi-milter.toml"
        self.log_path = workdir / f"{self.command}.log"
        # Copies: _configure fills in ports, which must not reach a caller's dict (a second
        # service made from the same dict would take the first one's ports).
        sections = {k.replace("__", "."): dict(v) for k, v in sections.items()}
        sections.setdefault("policy", {})["directory"] = str(self.policy_dir)
        self._configure(sections)
        self.config_path.write_text(toml(sections, {"state_dir": str(workdir / "state")}))
        self.process: subprocess.Popen[bytes] | None = None

    def _configure(self, sections: dict[str, dict[str, Any]]) -> None:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def write_policy(self, name: str, text: str) -> Path:
        path = self.policy_dir / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def start(self) -> RunningService:
        path = [*map(str, self.python_path), str(ROOT / "milter")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        argv = [sys.executable, "-m", "smtpapi_milter.cli", self.command]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # stop() can reach every process it starts
            )
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise AssertionError(
                f"{self.command} did not start:\n{self.log_path.read_text()}"
            ) from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is not None and self.log_path.exists():
            # The service's own account of a failing test (pytest shows captured stderr):
            # CI keeps nothing else, and a flaky failure may not come back.
            tail = self.log_path.read_text(errors="replace").splitlines()[-60:]
            print(f"--- last lines of {self.log_path}:", *tail, sep="\n", file=sys.stderr)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def wait_for_log(self, event: str, count: int = 1, timeout: float = 15) -> list[dict]:
        """Wait until ``count`` log lines with this event exist (probing, no fixed sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines() if line.get("event") == event]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {count}x {event!r} in {self.command} log:\n" + self.log_path.read_text()
                )
            time.sleep(0.05)

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)


class RunningMilter(RunningService):
    """``smtpapi-milter milter`` on a free loopback port, configured for one test."""

    command = "milter"

    def _configure(self, sections: dict[str, dict[str, Any]]) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        milter = sections.setdefault("milter", {})
        milter["socket"] = f"inet:{self.port}@127.0.0.1"
        milter.setdefault("metrics_listen", f"127.0.0.1:{self.metrics_port}")

    def _wait_ready(self) -> None:
        wait_for_port("127.0.0.1", self.port, deadline_in(20))

    @property
    def socket(self) -> str:
        """The socket as Postfix's smtpd_milters names it."""
        return f"inet:127.0.0.1:{self.port}"


class RunningTracker(RunningService):
    """``smtpapi-milter tracker`` on free loopback ports, ready when both answer /healthz."""

    command = "tracker"
    ready_path = "/healthz"
    # For a tracker whose store is meant to be down (/healthz answers 503): the admin
    # listener's dashboard page (served without the token, which may not exist yet), then
    # the public port.
    ready_on_admin = False

    def _configure(self, sections: dict[str, dict[str, Any]]) -> None:
        self.port, self.admin_port = free_port(), free_port()
        tracker = sections.setdefault("engagement_tracker", {})
        tracker["listen"] = f"127.0.0.1:{self.port}"
        tracker.setdefault("admin_listen", f"127.0.0.1:{self.admin_port}")
        smtpapi = sections.setdefault("smtpapi", {})
        smtpapi.setdefault("tracking_domain", f"127.0.0.1:{self.port}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def admin_token(self) -> str:
        """The token the admin listener requires: configured, or the one it generated."""
        from smtpapi_milter.config import load_config
        from smtpapi_milter.tracker.admin_access import admin_token

        return admin_token(load_config(str(self.config_path)), create=False)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def wait_indexed(self, timeout: float = 20.0) -> None:
        """Until every answered click is in the store: the tracker answers once an event is
        in its journal, and indexes it into the store a moment later (events/journal.py)."""
        from smtpapi_milter.config import load_config
        from smtpapi_milter.events.journal import backlog
        from smtpapi_milter.events.store import open_store
        from smtpapi_milter.tracker.server import JOURNAL_DIRECTORY

        config = load_config(str(self.config_path))
        directory = Path(config.state_dir) / JOURNAL_DIRECTORY
        store = open_store(config.event_store_url)
        try:
            deadline = time.monotonic() + timeout
            while (left := backlog(directory, store)) > 0:
                assert time.monotonic() < deadline, f"{left} journal bytes not indexed"
                time.sleep(0.01)  # polling the store: the indexer runs in another process
        finally:
            store.close()

    def _wait_ready(self) -> None:
        deadline = deadline_in(30)
        if self.ready_on_admin:
            wait_for_http(self.admin_url + "/dashboard/", deadline, self.process)
            wait_for_port("127.0.0.1", self.port, deadline)
            return
        wait_for_http(self.base_url + self.ready_path, deadline, self.process)
        wait_for_port("127.0.0.1", self.admin_port, deadline)


class RunningMaillog(RunningService):
    """``smtpapi-milter maillog``, ready once it logs that it is following its source."""

    command = "maillog"

    def _configure(self, sections: dict[str, dict[str, Any]]) -> None:
        sections.setdefault("maillog", {}).setdefault("poll_interval", 0.05)

    def start(self) -> RunningService:
        # A restart appends to the same log: ready at a "following" line of its own.
        self._followed = self._following()
        return super().start()

    def _following(self) -> int:
        if not self.log_path.exists():
            return 0
        return sum(1 for line in self.log_lines() if line.get("event") == "following")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while self._following() <= self._followed:
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("maillog did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing gets to clean up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
