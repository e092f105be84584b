"""`check` refuses what a start refuses, through the real CLI (issue 14 items 3 and 6).

Listen addresses are parsed strictly at load time (Postfix's `inet:HOST:PORT` once bound
0.0.0.0:127), and the start-up checks `check` shares with `milter`, `tracker` and `run`
(state directory, socket directory, trusted proxies) refuse before anything starts.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpapi_milter.sandbox.ports import free_port

from .harness.smtpapi import RunningMilter, toml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
EXIT_CONFIG = 3
START_LIMIT = 60  # seconds a refused start may take; a start that was not refused runs on


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """One command, run to its end; a service that starts instead of refusing is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpapi_milter.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=START_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"{args[0]} started instead of refusing:\n{err}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture()
def write_config(tmp_path):
    def write(state_dir: Path | str | None = None, **sections: dict) -> Path:
        path = tmp_path / "smtpapi-milter.toml"
        sections.setdefault("policy", {})["directory"] = str(tmp_path / "no-policies")
        top = {"state_dir": str(state_dir or tmp_path / "state")}
        path.write_text(toml({k.replace("__", "."): v for k, v in sections.items()}, top))
        return path

    return write


# --- item 3: milter socket and listen addresses -------------------------------------------


def test_postfix_notation_is_normalised_to_libmilters(write_config):
    config = write_config(milter={"socket": "inet:127.0.0.1:20892"})
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert 'socket = "inet:20892@127.0.0.1"' in result.stdout
    config = write_config(milter={"socket": "inet:[::1]:20892"})
    assert 'socket = "inet6:20892@::1"' in cli("check", "--config", str(config)).stdout


@pytest.mark.parametrize(
    "socket, shown",
    [
        # No host: libmilter would listen on every interface. Refused, never guessed.
        ("inet:8890", "write inet:8890@127.0.0.1 for this machine only, or inet:8890@0.0.0.0"),
        ("inet:8890@", "inet:8890@127.0.0.1"),
        ("inet6:8890", "inet6:8890@::1"),
        ("inet:smtp@127.0.0.1", "a port is a number from 1 to 65535"),
        ("inet:127.0.0.1:99999", "a port is a number from 1 to 65535"),
        ("inet:::1:8890", "inet6:PORT@ADDRESS"),
        ("unix:milter.sock", "absolute socket file path"),
        ("/run/milter.sock", "inet:PORT@HOST (e.g. inet:8890@127.0.0.1)"),
        ("inet:bad_host:8890", "has host 'bad_host'"),
    ],
)
def test_a_bad_milter_socket_is_refused_showing_the_right_form(write_config, socket, shown):
    config = write_config(milter={"socket": socket})
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert f"{config}: 'milter.socket' {socket!r}" in result.stderr
    assert shown in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("milter", "metrics_listen", ":9890"),  # the empty host binds every interface
        ("milter", "metrics_listen", "127.0.0.1:metrics"),
        ("engagement_tracker", "listen", "localhost:8080"),  # Granian binds addresses only
        ("engagement_tracker", "admin_listen", "::1:8081"),
    ],
)
def test_a_bad_listen_address_is_refused(write_config, section, key, value):
    config = write_config(**{section: {key: value}})
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert f"{config}: '{section}.{key}' {value!r}" in result.stderr


def listening_addresses(session: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the processes of ``session``."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getsid(int(proc.name)) != session:
                continue
            for fd in (proc / "fd").iterdir():
                inodes.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
        except (OSError, ProcessLookupError):
            continue
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            # /proc shows the address as host-order 32-bit words.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
            found.add((str(ipaddress.ip_address(words)), int(hex_port, 16)))
    return found


class PostfixNotationMilter(RunningMilter):
    """The milter configured with the socket as an operator copies it from main.cf."""

    def _configure(self, sections: dict) -> None:
        super()._configure(sections)
        sections["milter"]["socket"] = f"inet:127.0.0.1:{self.port}"


def test_a_milter_given_postfix_notation_listens_on_loopback_only(tmp_path):
    # Before: libmilter read "127.0.0.1:PORT" as port 127 on 0.0.0.0, and this never started.
    with PostfixNotationMilter(tmp_path) as milter:
        milter.wait_for_log("milter starting")
        addresses = listening_addresses(milter.process.pid)
    assert ("127.0.0.1", milter.port) in addresses
    assert all(address in ("127.0.0.1", "::1") for address, _ in addresses), addresses


# --- item 6: check runs the start-up validation --------------------------------------------


def test_a_bad_trusted_proxy_is_refused_by_check_and_by_a_start(write_config):
    config = write_config(engagement_tracker={"trusted_proxies": ["10.0.0.0/8", "10.1.2.0/33"]})
    for command in ("check", "tracker", "run"):
        result = cli(command, "--config", str(config))
        assert result.returncode == EXIT_CONFIG, (command, result.stderr)
        assert "'engagement_tracker.trusted_proxies[1]' '10.1.2.0/33'" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_unix_socket_in_a_missing_directory_is_refused_by_check_and_by_a_start(
    write_config, tmp_path
):
    config = write_config(milter={"socket": f"unix:{tmp_path}/gone/milter.sock"})
    for command in ("check", "milter"):
        result = cli(command, "--config", str(config))
        assert result.returncode == EXIT_CONFIG, (command, result.stderr)
        assert f"directory {tmp_path}/gone does not exist" in result.stderr


def test_a_port_that_is_not_a_number_is_refused_by_a_start(write_config):
    config = write_config(milter={"socket": f"inet:{free_port()}x@127.0.0.1"})
    result = cli("milter", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert "a port is a number" in result.stderr


@pytest.fixture()
def nobody_state() -> Iterator[Path]:
    """A state directory owned by `nobody`, as tmpfiles.d makes one for the service user
    (outside pytest's 0700 tmp_path, so that its owner can reach it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the state directory belongs to another user")
    nobody = pwd.getpwnam("nobody")
    state = Path(tempfile.mkdtemp(prefix="smtpapi-state-"))
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    yield state
    subprocess.run(["rm", "-rf", str(state)], check=True)


def test_a_state_dir_its_owner_cannot_write_is_refused(write_config, nobody_state):
    nobody_state.chmod(0o500)
    config = write_config(nobody_state)
    for command in ("check", "tracker"):
        result = cli(command, "--config", str(config))
        assert result.returncode == EXIT_CONFIG, (command, result.stderr)
        assert f"'state_dir' {nobody_state} is not writable by user nobody" in result.stderr


def test_a_database_root_left_in_the_state_dir_is_refused(write_config, nobody_state):
    # What `events` as root used to leave behind: the tracker then answered 503 for good.
    (nobody_state / "events.sqlite3").touch(mode=0o600)
    config = write_config(nobody_state)
    for command in ("check", "tracker"):
        result = cli(command, "--config", str(config))
        assert result.returncode == EXIT_CONFIG, (command, result.stderr)
        assert f"{nobody_state}/events.sqlite3 is not writable by user nobody" in result.stderr
        assert "owned by root" in result.stderr


def test_a_state_dir_that_cannot_be_created_is_refused(write_config, tmp_path):
    (tmp_path / "file").write_text("")
    config = write_config(tmp_path / "file" / "state")
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert f"'state_dir' {tmp_path}/file/state does not exist" in result.stderr


def test_check_creates_nothing(write_config, tmp_path):
    config = write_config(tmp_path / "state")
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "created on first start" in result.stdout
    assert not (tmp_path / "state").exists()
