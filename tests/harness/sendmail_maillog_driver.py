"""Runs inside ``unshare -u -n -p``: our milter, a test MX answering per recipient and a real
Sendmail whose syslog() goes to a file (``syslog_to_file.c``, preloaded), then one message
per recipient; it returns once Sendmail has logged each first outcome. With
``rotate_after=N`` the log is rotated as logrotate does it (renamed to ``NAME.1``) once the
first N messages' outcomes are in it: the shim opens the path for every line, as a syslog
daemon reopens it on logrotate's SIGHUP, so later lines go to a new file.

``python -m tests.harness.sendmail_maillog_driver SPEC RESULT``; :func:`run` does the unshare.
The follower itself runs outside: it needs only the log file and the event store.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from .answering_mx import AnsweringMX
from .ports import free_port
from .sendmail import BINARY, ROOT, SendmailError, ensure_unpacked, write_cf
from .sendmail_driver import RunningSendmail, bring_up_namespace, send
from .smtpapi import RunningMilter

SHIM_SOURCE = Path(__file__).with_name("syslog_to_file.c")
LOGGED_TIMEOUT = 60.0


def build_shim(directory: Path) -> Path:
    """Compile the syslog-to-file shim (gcc is in the Makefile's APT_PACKAGES)."""
    shim = directory / "syslog_to_file.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SendmailError(f"cannot build {SHIM_SOURCE}: {done.stderr}")
    return shim


def run(
    workdir: Path, log: Path, store: str, messages: list[dict], rotate_after: int | None = None
) -> list[dict]:
    """Send ``messages`` (data, rcpts, from) through Sendmail in a private namespace; the
    replies the client got, once each recipient's first outcome is in ``log`` (or in
    ``log``.1, rotated after ``rotate_after`` messages)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "rotate_after": rotate_after,
        "tree": str(ensure_unpacked()),
        "workdir": str(workdir),
        "log": str(log),
        "store": store,
        "shim": str(build_shim(workdir)),
        "messages": [{**m, "data": base64.b64encode(m["data"]).decode()} for m in messages],
    }
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps(spec))
    command = ["unshare", "-u", "-n", "-p", "-f", "--kill-child", sys.executable, "-m"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "milter")])}
    done = subprocess.run(
        [*command, __name__, str(spec_path), str(result_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0 or not result_path.exists():
        raise SendmailError(f"driver failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(result_path.read_text())


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    workdir, log = Path(spec["workdir"]), Path(spec["log"])
    bring_up_namespace()
    (workdir / "milter").mkdir(exist_ok=True)
    (workdir / "sendmail").mkdir(exist_ok=True)
    with ExitStack() as stack:
        mx = stack.enter_context(AnsweringMX())
        milter = stack.enter_context(
            RunningMilter(workdir / "milter", events={"store": spec["store"]})
        )
        smtp_port = free_port()
        cf = write_cf(
            Path(spec["tree"]),
            workdir / "sendmail",
            smtp_port,
            f"inet:{milter.port}@127.0.0.1",
            mx.port,
        )
        # Only Sendmail gets the shim (started after the milter, which inherits nothing).
        # The packaged binary is setgid mail, and the loader ignores LD_PRELOAD for setgid
        # programs: a copy without the bit runs the same code (as root here anyway).
        tree = workdir / "sendmail-tree"
        (tree / BINARY).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(spec["tree"]) / BINARY, tree / BINARY)
        (tree / BINARY).chmod(0o755)
        os.environ["LD_PRELOAD"] = spec["shim"]
        os.environ["SMTPAPI_SYSLOG_FILE"] = str(log)
        stack.enter_context(RunningSendmail(tree, cf, smtp_port))
        del os.environ["LD_PRELOAD"]
        replies: list[dict] = []
        for number, message in enumerate(spec["messages"]):
            if number == spec.get("rotate_after"):
                _wait_logged(log, replies)
                log.rename(rotated(log))
            reply = send(smtp_port, message)
            # "2.0.0 0B4G0abc001234 Message accepted for delivery": the queue id
            reply["queue_id"] = reply["text"].split()[1] if reply["accepted"] else ""
            replies.append(reply)
        _wait_logged(log, replies)
    Path(result_path).write_text(json.dumps(replies))
    return 0


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def _wait_logged(log: Path, replies: list[dict]) -> None:
    deadline = time.monotonic() + LOGGED_TIMEOUT
    while not all(_logged(log, reply["queue_id"]) for reply in replies if reply["accepted"]):
        if time.monotonic() > deadline:
            raise SendmailError(f"outcomes not logged in {log}:\n{_read(log)}")
        time.sleep(0.05)


def _read(log: Path) -> str:
    """The log and its rotated copy, if any."""
    return "".join(p.read_text(errors="replace") for p in (rotated(log), log) if p.exists())


def _logged(log: Path, queue_id: str) -> bool:
    return any(f"{queue_id}: to=" in line and "stat=" in line for line in _read(log).splitlines())


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
