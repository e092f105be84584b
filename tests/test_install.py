"""`make install` / `make uninstall`: the install path README's "Install on a mail server" uses.

Staged into a scratch DESTDIR (what a package build does) the tree is checked file by file, and
the venv must not remember the staging path; then once for real into / (as root, as CI runs on
a throwaway machine): `smtpapi-milter run` started from /usr/bin answers on its milter socket
and its tracker, and `make uninstall` takes away everything but the configuration and state.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from .harness.ports import deadline_in, free_port, wait_for_http, wait_for_port
from .harness.smtpapi import toml

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted(p.name for p in (ROOT / "packaging" / "systemd").iterdir())
# What `make install` puts outside /opt/smtpapi-milter (and `make uninstall` removes), mode.
INSTALLED = {
    **{f"usr/lib/systemd/system/{unit}": 0o644 for unit in UNITS},
    "usr/lib/sysusers.d/smtpapi-milter.conf": 0o644,
    "usr/lib/tmpfiles.d/smtpapi-milter.conf": 0o644,
    "usr/share/smtpapi-milter/postfix/main.cf.snippet": 0o644,
    "usr/share/smtpapi-milter/postfix/master.cf.snippet": 0o644,
    "usr/share/smtpapi-milter/sendmail/smtpapi-milter.mc": 0o644,
    "usr/share/smtpapi-milter/nftables/smtpapi-tracker.nft": 0o644,
    "usr/share/smtpapi-milter/policies/example.py": 0o644,
    "usr/share/smtpapi-milter/smtpapi-milter.toml": 0o644,
}
CONFIG = "etc/smtpapi-milter/smtpapi-milter.toml"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "DESTDIR")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def files_naming(directory: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_install_into_destdir_checks_the_tree_and_uninstall_keeps_the_config(tmp_path):
    dest = tmp_path / "root"
    out = make("install", f"DESTDIR={dest}").stdout

    venv = dest / "opt/smtpapi-milter"
    command = dest / "usr/bin/smtpapi-milter"
    assert os.readlink(command) == "/opt/smtpapi-milter/bin/smtpapi-milter"
    for path, expected in INSTALLED.items():
        assert mode(dest / path) == expected, path
    for unit in (u for u in UNITS if u.endswith(".service")):
        text = (dest / "usr/lib/systemd/system" / unit).read_text()
        assert "ExecStart=/usr/bin/smtpapi-milter " in text, unit
    assert (dest / CONFIG).read_bytes() == (ROOT / "packaging/smtpapi-milter.toml").read_bytes()
    assert (mode(dest / CONFIG), mode(dest / "etc/smtpapi-milter")) == (0o640, 0o750)
    # Staged, but made for /opt: no script, pyvenv.cfg or bytecode names the staging path.
    assert (venv / "bin/smtpapi-milter").read_text().startswith("#!/opt/smtpapi-milter/bin/python")
    assert files_naming(venv, str(dest)) == []
    # The staged venv runs, from its own site-packages (a wheel, not this checkout).
    where = subprocess.run(
        [venv / "bin/python", "-c", "import smtpapi_milter.cli as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert where.startswith(f"{venv}/lib/python3") and "site-packages" in where, where
    assert "installed: /usr/bin/smtpapi-milter" in out

    # Again over the first, with the admin's config edited: the config is theirs.
    (dest / CONFIG).write_text("# edited by the admin\n")
    out = make("install", f"DESTDIR={dest}").stdout
    assert f"kept {dest}/{CONFIG}" in out
    assert (dest / CONFIG).read_text() == "# edited by the admin\n"

    out = make("uninstall", f"DESTDIR={dest}").stdout
    assert not venv.exists() and not command.is_symlink()
    for path in INSTALLED:
        assert not (dest / path).exists(), path
    assert (dest / CONFIG).read_text() == "# edited by the admin\n"
    assert "kept" in out and "/etc/smtpapi-milter" in out and "/var/lib/smtpapi-milter" in out


def test_install_honours_prefix():
    plan = make("-n", "install", "PREFIX=/usr/local", "DESTDIR=/nonexistent/stage").stdout
    assert (
        "ln -sfn /opt/smtpapi-milter/bin/smtpapi-milter /nonexistent/stage/usr/local/bin/" in plan
    )
    assert "s|/usr/bin/smtpapi-milter|/usr/local/bin/smtpapi-milter|g" in plan
    for directory in ("lib/systemd/system", "lib/sysusers.d", "lib/tmpfiles.d", "share"):
        assert f"/nonexistent/stage/usr/local/{directory}" in plan, directory


def milter_answers(port: int) -> bytes:
    """One libmilter option negotiation (SMFIC_OPTNEG): the reply's command byte, b"O"."""
    request = b"O" + struct.pack("!III", 6, 0x1FF, 0x1FFFFF)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack("!I", len(request)) + request)
        (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
        return conn.recv(length, socket.MSG_WAITALL)[:1]


REAL_PATHS = [Path("/opt/smtpapi-milter"), Path("/usr/bin/smtpapi-milter")]


# An MJML template's head: Debian 12's Python (3.11.2, what the installed venv runs on) once
# read the first comment as running to the end of the text (tests/test_regex_portability.py).
OUTLOOK_HEAD = (
    b"From: news@example.com\r\nTo: reader@example.org\r\nSubject: s\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
    b'X-MSYS-API: {"options": {"click_tracking": true}}\r\n\r\n'
    b"<html><head><!--[if mso]>\r\n<xml><o:AllowPNG/></xml>\r\n<![endif]-->\r\n"
    b'<!--[if lte mso 11]>\r\n<style type="text/css">.x { width:100% }</style>\r\n'
    b"<![endif]-->\r\n</head><body>"
    b'<a href="https://example.com/one">one</a> <a href="https://example.com/two">two</a>'
    b"</body></html>\r\n"
)


def assert_installed_rewrite_tracks_after_outlook_comments(config: Path, tmp_path: Path) -> None:
    """The installed program's rewrite tracks both links of OUTLOOK_HEAD."""
    message = tmp_path / "outlook.eml"
    message.write_bytes(OUTLOOK_HEAD)
    result = subprocess.run(
        ["/usr/bin/smtpapi-milter", "rewrite", "--config", str(config), str(message)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    assert b"https://example.com/" not in result.stdout, result.stdout.decode()
    assert result.stdout.count(b"/c/") == 2, result.stdout.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="make install into / needs root (CI runs as root)")
@pytest.mark.skipif(
    any(p.exists() or p.is_symlink() for p in REAL_PATHS),
    reason="smtpapi-milter is installed on this machine: the test leaves it alone",
)
def test_make_install_for_real_then_run_from_usr_bin(tmp_path):
    etc = Path("/etc/smtpapi-milter")
    etc_was_there = etc.exists()
    milter, tracker, admin, metrics = (free_port() for _ in range(4))
    (tmp_path / "policies").mkdir()
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(
        toml(
            {
                "milter": {
                    "socket": f"inet:{milter}@127.0.0.1",
                    "metrics_listen": f"127.0.0.1:{metrics}",
                },
                "policy": {"directory": str(tmp_path / "policies")},
                "engagement_tracker": {
                    "listen": f"127.0.0.1:{tracker}",
                    "admin_listen": f"127.0.0.1:{admin}",
                },
            },
            {"state_dir": str(tmp_path / "state")},
        )
    )
    process = None
    try:
        make("install")
        with (tmp_path / "run.log").open("wb") as log:
            process = subprocess.Popen(
                ["/usr/bin/smtpapi-milter", "run", "--config", str(config)],
                env={"PATH": "/usr/bin:/bin"},  # nothing of this checkout or its venv
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = deadline_in(60)
        wait_for_port("127.0.0.1", milter, deadline)
        wait_for_http(f"http://127.0.0.1:{tracker}/healthz", deadline, process)
        wait_for_http(f"http://127.0.0.1:{admin}/healthz", deadline, process)
        assert milter_answers(milter) == b"O"
        assert_installed_rewrite_tracks_after_outlook_comments(config, tmp_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "run.log").read_text()
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out = make("uninstall").stdout
        if not etc_was_there:  # uninstall keeps the config by design; this test made it
            shutil.rmtree(etc, ignore_errors=True)
    assert not any(p.exists() or p.is_symlink() for p in REAL_PATHS)
    assert "kept /etc/smtpapi-milter" in out
