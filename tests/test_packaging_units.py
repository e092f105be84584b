"""The shipped systemd units, sysusers.d and tmpfiles.d entries, checked by systemd's own tools.

There is no systemd running the tests, so the units are checked statically: ``systemd-analyze
verify`` (syntax, known keys, executables present) with the console script of this install in
place of /usr/bin, and ``systemd-analyze security --offline`` holds the hardening to its
current exposure. sysusers.d and tmpfiles.d run for real against a scratch root. The Makefile
installs systemd: missing tools fail here, they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
UNITS = sorted((PACKAGING / "systemd").iterdir())
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
SHIPPED_BINARY = "/usr/bin/smtpapi-milter"
# systemd-analyze security's 0-100 scale (it prints 1.7 for 17): fail if hardening erodes.
EXPOSURE_THRESHOLD = 20


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: the Makefile installs systemd (APT_PACKAGES)")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def console_script() -> Path:
    script = Path(sys.executable).parent / "smtpapi-milter"
    assert script.exists(), f"{script}: install the project (make venv) to check the units"
    return script


@pytest.fixture(scope="module")
def installed_units(tmp_path_factory) -> list[Path]:
    """The units as installed here: ExecStart pointing at this install's console script."""
    directory = tmp_path_factory.mktemp("units")
    copies = []
    for unit in UNITS:
        copy = directory / unit.name
        copy.write_text(unit.read_text().replace(SHIPPED_BINARY, str(console_script())))
        copies.append(copy)
    return copies


def test_the_expected_units_are_shipped():
    assert [u.name for u in UNITS] == [
        "smtpapi-maillog.service",
        "smtpapi-milter-activated.service",
        "smtpapi-milter.service",
        "smtpapi-milter.socket",
        "smtpapi-tracker.service",
    ]
    for service in SERVICES:
        assert f"ExecStart={SHIPPED_BINARY} " in service.read_text(), service


def test_units_verify_cleanly(installed_units):
    result = run(tool("systemd-analyze"), "verify", "--man=no", *installed_units)
    # Unknown keys and bad values are warnings on stderr with exit status 0: any is a failure.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_verify_catches_a_typo(installed_units, tmp_path):
    broken = tmp_path / "smtpapi-milter.service"
    (service,) = [u for u in installed_units if u.name == "smtpapi-milter.service"]
    broken.write_text(service.read_text().replace("ProtectHome=", "ProtectHom="))
    result = run(tool("systemd-analyze"), "verify", "--man=no", broken)
    assert "Unknown key" in result.stderr


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_services_stay_hardened(installed_units, name):
    (unit,) = [u for u in installed_units if u.name == name]
    result = run(
        tool("systemd-analyze"),
        "security",
        "--offline=yes",
        f"--threshold={EXPOSURE_THRESHOLD}",
        unit,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_sysusers_and_tmpfiles_create_user_and_directories(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).touch()
    sysusers = PACKAGING / "sysusers.d" / "smtpapi-milter.conf"
    result = run(tool("systemd-sysusers"), f"--root={root}", sysusers)
    assert result.returncode == 0, result.stderr
    (entry,) = (root / "etc" / "passwd").read_text().splitlines()
    name, _, uid, gid, _, home, shell = entry.split(":")
    assert (name, home, shell) == ("smtpapi", "/var/lib/smtpapi-milter", "/usr/sbin/nologin")

    # As `make install` leaves it (0640 root:root), before the smtpapi group existed.
    (root / "etc/smtpapi-milter").mkdir(mode=0o750)
    (root / "etc/smtpapi-milter/smtpapi-milter.toml").touch(mode=0o640)
    tmpfiles = PACKAGING / "tmpfiles.d" / "smtpapi-milter.conf"
    result = run(tool("systemd-tmpfiles"), f"--root={root}", "--create", tmpfiles)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    expected = {
        "etc/smtpapi-milter": (0, int(gid), 0o750),
        "etc/smtpapi-milter/smtpapi-milter.toml": (0, int(gid), 0o640),
        "etc/smtpapi-milter/policies": (0, 0, 0o755),
        "var/lib/smtpapi-milter": (int(uid), int(gid), 0o750),
    }
    for path, owner in expected.items():
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == owner, path


def test_postfix_snippets_parse_without_warnings(tmp_path):
    """postconf reads the snippets as an operator would append them to a stock config."""
    main = "compatibility_level = 3.6\n" + (PACKAGING / "postfix" / "main.cf.snippet").read_text()
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    (tmp_path / "main.cf").write_text(main)
    (tmp_path / "master.cf").write_text(
        master + (PACKAGING / "postfix/master.cf.snippet").read_text()
    )
    postconf = shutil.which("postconf", path="/usr/sbin:/usr/bin") or "postconf"
    for flag in ("-n", "-M", "-P"):
        result = run(postconf, "-c", tmp_path, flag)
        assert (result.returncode, result.stderr) == (0, ""), (flag, result.stderr)
    result = run(postconf, "-c", tmp_path, "-x", "-P", "2525/inet/smtpd_milters")
    # Our milter first, the (here empty) signer list after it.
    assert result.stdout.strip() == "2525/inet/smtpd_milters = inet:127.0.0.1:8890,"
