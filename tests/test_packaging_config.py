"""The shipped configuration file, packaging/smtpapi-milter.toml, stays true and complete.

It must load as it is and state exactly the built-in defaults; every field of every config
dataclass must appear in it with a comment of its own (so a key added to config.py without
documentation fails here); its commented examples must load too; and ``check`` must accept
it and refuse an unknown key, naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path

from smtpapi_milter.config import Config, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "packaging" / "smtpapi-milter.toml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
HEADER = re.compile(r"^(?:# )?\[\[?([A-Za-z0-9_.-]+)\]\]?$")
KEY = re.compile(r"^(?:# )?([a-z_]+) = ")
ANY_TABLE = "*"  # a dict field: documented by one example [section.field.NAME] table


def expected_keys(cls: type = Config, section: str = "") -> Iterator[tuple[str, str]]:
    """(section, key) for every field of the dataclass tree under ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":  # set by the loader, not a key
            continue
        hint, name = hints[f.name], f"{section}.{f.name}".lstrip(".")
        args = typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            yield from expected_keys(hint, name)
        elif typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
            yield from expected_keys(args[0], name)  # an array of tables, [[name]]
        elif typing.get_origin(hint) is dict:
            yield name, ANY_TABLE
        else:
            yield section, f.name


def documented_keys(text: str) -> dict[tuple[str, str], str]:
    """(section, key) -> the line above it, for keys set or shown commented out."""
    found: dict[tuple[str, str], str] = {}
    section, previous = "", ""
    for line in text.splitlines():
        if header := HEADER.match(line):
            section = header.group(1)
            parent, _, _ = section.rpartition(".")
            found.setdefault((parent, ANY_TABLE), previous)
        elif key := KEY.match(line):
            found.setdefault((section, key.group(1)), previous)
        previous = line
    return found


def uncommented_examples(text: str) -> str:
    """The file with its commented example tables ("# [table]" and the "# " lines under it)
    turned into live TOML."""
    lines, in_example = [], False
    for line in text.splitlines():
        if HEADER.match(line) and line.startswith("# "):
            in_example = True
        elif not line.startswith("# "):
            in_example = False
        lines.append(line[2:] if in_example else line)
    return "\n".join(lines) + "\n"


def writable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The shipped file with state_dir and the policy directory moved into ``tmp_path``."""
    text = SHIPPED.read_text() if text is None else text
    text, states = re.subn(r'(?m)^state_dir = ".*"$', f'state_dir = "{tmp_path}/state"', text)
    text, policies = re.subn(
        r'(?m)^directory = "/etc/smtpapi-milter/policies"$',
        f'directory = "{tmp_path}/policies"',
        text,
    )
    assert (states, policies) == (1, 1), "the shipped file changed shape: update this test"
    (tmp_path / "policies").mkdir(exist_ok=True)
    copy = tmp_path / "smtpapi-milter.toml"
    copy.write_text(text)
    return copy


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "check", "--config", str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shipped_file_states_the_builtin_defaults():
    config = load_config(str(SHIPPED))
    assert dataclasses.replace(config, source=Config().source) == Config()


def test_every_config_field_is_in_the_shipped_file_with_its_own_comment():
    documented = documented_keys(SHIPPED.read_text())
    expected = set(expected_keys())
    # The walk reaches top-level keys, nested tables, arrays of tables and dict fields.
    assert {("", "state_dir"), ("webhooks", "hmac_secret"), ("smtpapi.listener", "*")} <= expected
    missing = sorted(expected - set(documented))
    assert not missing, f"add these keys, each with a comment, to {SHIPPED}: {missing}"
    for key in expected:
        above = documented[key]
        assert above.startswith("#") and not KEY.match(above), f"{key} has no comment of its own"


def test_documentation_walk_catches_an_undocumented_key():
    text = SHIPPED.read_text().replace("\n# Seconds events are kept; 0 keeps them forever.", "")
    assert ("events", "retention") in expected_keys()
    above = documented_keys(text)[("events", "retention")]
    assert KEY.match(above)  # the line above is now the store key: flagged as undocumented
    assert ("events", "retention") not in documented_keys(text.replace("retention = 0", ""))


def test_commented_examples_load_and_state_defaults():
    config = parse_config(tomllib.loads(uncommented_examples(SHIPPED.read_text())), str(SHIPPED))
    (hook,) = config.webhooks
    assert dataclasses.replace(hook, url="") == type(hook)()
    assert set(config.smtpapi.listener) == {"smtpapi-in"}


def test_check_accepts_the_shipped_file(tmp_path):
    result = check(writable_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "# configuration OK" in result.stdout
    assert 'socket = "inet:8890@127.0.0.1"' in result.stdout


def test_check_refuses_an_unknown_key_naming_key_and_file(tmp_path):
    text = SHIPPED.read_text().replace("[milter]\n", "[milter]\nsoket = 'inet:1@127.0.0.1'\n", 1)
    copy = writable_copy(tmp_path, text)
    result = check(copy)
    assert result.returncode == 3
    assert result.stderr.strip() == f"smtpapi-milter: {copy}: unknown key 'milter.soket'"
