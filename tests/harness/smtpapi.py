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

from .ports import deadline_in, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml(sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class RunningMilter:
    """``smtpapi-milter milter`` on a free loopback port, configured for one test."""

    def __init__(self, workdir: Path, **sections: dict[str, Any]):
        self.workdir = workdir
        self.port = free_port()
        self.policy_dir = workdir / "policies"
        self.policy_dir.mkdir(exist_ok=True)
        self.config_path = workdir / "smtpapi-milter.toml"
        self.log_path = workdir / "milter.log"
        sections = {k.replace("__", "."): v for k, v in sections.items()}
        sections.setdefault("milter", {})["socket"] = f"inet:{self.port}@127.0.0.1"
        sections.setdefault("policy", {})["directory"] = str(self.policy_dir)
        self.config_path.write_text(toml(sections, {"state_dir": str(workdir / "state")}))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        """The socket as Postfix's smtpd_milters names it."""
        return f"inet:127.0.0.1:{self.port}"

    def write_policy(self, name: str, text: str) -> Path:
        path = self.policy_dir / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def start(self) -> RunningMilter:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "smtpapi_milter.cli",
                    "milter",
                    "--config",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            wait_for_port("127.0.0.1", self.port, deadline_in(20))
        except Exception:
            self.stop()
            raise AssertionError(f"milter did not start:\n{self.log_path.read_text()}") from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RunningMilter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
                    f"no {count}x {event!r} in milter log:\n" + self.log_path.read_text()
                )
            time.sleep(0.05)

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
