"""The command line, run as a user runs it: a subprocess, real files, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smtpapi_milter.cli import build_parser

from . import corpus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", *args],
        env=ENV,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture()
def config(tmp_path) -> Path:
    path = tmp_path / "smtpapi-milter.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n')
    return path


@pytest.mark.parametrize("command", [[], *([c] for c in SUBCOMMANDS)], ids=str)
def test_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert b"usage: smtpapi-milter" in result.stdout


def test_subcommands_present():
    assert {"rewrite", "check"} <= set(SUBCOMMANDS)


def test_rewrite_to_out_dir_and_stdout(tmp_path, config):
    html = b'<html><body><a href="https://example.com/x?a=1&amp;b=2">x</a></body></html>\r\n'
    message = corpus.wrap_html(html, "quoted-printable")
    (tmp_path / "one.eml").write_bytes(message)
    (tmp_path / "two.eml").write_bytes(message.replace(b"jane.doe", b"john.roe"))
    result = cli(
        "rewrite",
        "--config",
        str(config),
        "--out-dir",
        str(tmp_path / "out"),
        str(tmp_path / "one.eml"),
        str(tmp_path / "two.eml"),
    )
    assert result.returncode == 0, result.stderr
    for name in ("one.eml", "two.eml"):
        out = (tmp_path / "out" / name).read_bytes()
        assert b"X-MSYS-API" not in out and b"localhost:8080/c/" in out.replace(b"=\r\n", b"")
    result = cli("rewrite", "--config", str(config), "-", stdin=message)
    assert result.returncode == 0
    assert result.stdout.startswith(b"From: Example News <news@example.com>\r\n")
    key = Path(config).parent / "state" / "link-keys"
    assert key.stat().st_mode & 0o777 == 0o600  # the single-machine default key


def test_rewrite_rejection_prints_reply_and_fails(tmp_path, config):
    bad = corpus.wrap_html(b"<p>x</p>", "8bit", b'X-MSYS-API: {"tags": "one"}')
    good = corpus.wrap_html(b"<p>x</p>", "8bit")
    (tmp_path / "bad.eml").write_bytes(bad)
    (tmp_path / "good.eml").write_bytes(good)
    result = cli(
        "rewrite",
        "--config",
        str(config),
        "--out-dir",
        str(tmp_path / "o"),
        str(tmp_path / "bad.eml"),
        str(tmp_path / "good.eml"),
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"{tmp_path / 'bad.eml'}: 550 5.6.0 X-MSYS-API 'tags' must be of type 'json array'"
    )
    assert (tmp_path / "o" / "good.eml").exists()  # the other files still get done
    assert not (tmp_path / "o" / "bad.eml").exists()


def test_rewrite_needs_a_recipient(tmp_path, config):
    (tmp_path / "m.eml").write_bytes(b"Subject: no To\r\n\r\nbody\r\n")
    result = cli("rewrite", "--config", str(config), str(tmp_path / "m.eml"))
    assert result.returncode == 2
    assert b"no recipient" in result.stderr
    result = cli(
        "rewrite", "--config", str(config), "--rcpt", "a@example.com", str(tmp_path / "m.eml")
    )
    assert (result.returncode, result.stdout) == (0, b"Subject: no To\r\n\r\nbody\r\n")
    assert cli("rewrite", "--config", str(config), str(tmp_path / "nope.eml")).returncode == 2


def test_check_prints_effective_settings(config):
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert 'tracking_domain = "localhost:8080"' in out
    assert "[smtpapi]" in out and "# configuration OK" in out


def test_check_refuses_unknown_key_naming_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[smtpapi]\nclick_traking_enabled = true\n")
    result = cli("check", "--config", str(path))
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"smtpapi-milter: {path}: unknown key 'smtpapi.click_traking_enabled'"
    )


def test_check_names_a_broken_policy(tmp_path, config):
    policy = tmp_path / "bad.py"
    policy.write_text("def validate_connect(ctx)\n")
    policy.chmod(0o644)
    result = cli("check", "--config", str(config))
    assert result.returncode == 3
    assert f"{policy}: SyntaxError" in result.stderr.decode()


def test_check_lists_shipped_policies(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path}"\n[policy]\ndirectory = "{ROOT / "policies"}"\n')
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "example.py: validate_mailfrom" in result.stdout.decode()


def test_rewrite_says_on_stderr_why_each_untracked_file_stayed_so(tmp_path):
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n'
        "[smtpapi]\nmta_message_size_limit = 20000\n"
    )
    html = b'<html><body><a href="https://example.com/x">x</a></body></html>\r\n'
    dense = b"".join(b'<a href="https://example.com/%d">.</a>\r\n' % i for i in range(300))
    signed = corpus.wrap_html(html, "8bit").replace(
        b"Content-Type: text/html; charset=utf-8",
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=b',
    )
    files = {
        "tracked.eml": corpus.wrap_html(html, "8bit"),
        "plain.eml": corpus.wrap_html(html, "8bit", b""),
        "dkim.eml": corpus.wrap_html(
            html, "8bit", b"DKIM-Signature: v=1; d=example.com\r\n" + corpus.TRACK_ALL
        ),
        "signed.eml": signed,
        "charset.eml": corpus.wrap_html(html, "8bit").replace(b"utf-8", b"x-no-such-charset"),
        "dense.eml": corpus.wrap_html(b"<html><body>" + dense + b"</body></html>", "8bit"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in files]
    result = cli("rewrite", "--config", str(config), "--out-dir", str(tmp_path / "out"), *paths)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    expected = {
        "plain.eml": "no_tracking",
        "dkim.eml": "dkim_signed",
        "signed.eml": "signed_or_encrypted",
        "charset.eml": "no_usable_part",
        "dense.eml": "over_mta_limit",
    }
    assert [line.split(": untracked (")[0] for line in lines] == [
        str(tmp_path / name) for name in expected
    ]
    for line, code in zip(lines, expected.values(), strict=True):
        assert f": untracked ({code}): " in line, line
    assert "unknown charset" in lines[3] and "limit 20000" in lines[4]
