"""``smtpapi-milter suppression`` through the real CLI, on SQLite and PostgreSQL (SPEC 14)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smtpapi_milter.events.store import open_store
from smtpapi_milter.suppression.store import list_entries

from .harness.smtpapi import toml
from .test_cli_operator_safety import ENV
from .test_store import store_url  # noqa: F401 (fixture: SQLite and PostgreSQL)

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 4


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "smtpapi-milter.toml"
    sections = {"policy": {"directory": str(tmp_path / "no-policies")}, "events": {"store": url}}
    path.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    return path


def suppression(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "suppression", *args, "--config", str(config)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture()
def config(tmp_path: Path, store_url: str) -> Path:  # noqa: F811
    with contextlib.closing(open_store(store_url)):  # the service made the store
        pass
    return config_for(tmp_path, store_url)


def test_add_list_remove(config: Path) -> None:
    added = suppression(config, "add", "Jane@Example.org", "--description", "asked by phone")
    assert added.returncode == 0, added.stderr
    assert "jane@example.org" in added.stdout
    assert suppression(config, "add", "jane@example.org", "--type", "transactional").returncode == 0
    table = suppression(config, "list")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("jane@example.org") == 2 and "asked by phone" in table.stdout
    lines = suppression(config, "list", "--format", "json", "--search", "PHONE").stdout
    [entry] = [json.loads(line) for line in lines.splitlines()]
    assert entry["recipient"] == "jane@example.org" and entry["type"] == "non_transactional"
    assert entry["source"] == "manual" and entry["non_transactional"] is True
    assert entry["created"].endswith("+00:00")
    assert suppression(config, "list", "--source", "bounce").stdout.strip() == "no entries"
    removed = suppression(config, "remove", "JANE@example.org", "--type", "transactional")
    assert removed.returncode == 0 and "removed 1 entry" in removed.stdout
    assert suppression(config, "remove", "jane@example.org").stdout.startswith("removed 1 ")
    assert suppression(config, "list").stdout.strip() == "no entries"


def test_bad_address_is_refused(config: Path) -> None:
    result = suppression(config, "add", "not-an-address")
    assert result.returncode == EXIT_USAGE
    assert "'not-an-address' is not an address" in result.stderr


def test_import_then_export_in_sparkposts_columns(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "list.csv"
    source.write_text(
        "Recipient,Transactional,Non_Transactional,Description\r\n"
        "a@example.org,false,true,from the old provider\r\n"
        "B@Example.org,true,true,\r\n",
        encoding="utf-8",
    )
    result = suppression(config, "import", str(source))
    assert result.returncode == 0, result.stderr
    assert "imported 3 entries" in result.stdout
    exported = suppression(config, "export")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(rows[0]) == ["recipient", "type", "source", "description", "created", "updated"]
    assert [(r["recipient"], r["type"], r["description"]) for r in rows] == [
        ("a@example.org", "non_transactional", "from the old provider"),
        ("b@example.org", "non_transactional", ""),
        ("b@example.org", "transactional", ""),
    ]
    # the export imports again as it is (type and source columns)
    again = tmp_path / "again.csv"
    again.write_text(exported.stdout)
    assert suppression(config, "import", str(again)).returncode == 0
    assert suppression(config, "export").stdout.count("\n") == 4


def test_bad_rows_fail_the_whole_import(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(
        "recipient,type,description\n"
        "ok@example.org,non_transactional,\n"
        "nobody-at-all,non_transactional,\n"
        "x@example.org,marketing,\n"
    )
    result = suppression(config, "import", str(source))
    assert result.returncode == EXIT_USAGE
    assert f"{source}: 2 bad row(s), nothing imported" in result.stderr
    assert "line 3, column recipient: recipient 'nobody-at-all' is not an address" in result.stderr
    assert "line 4, column type: type 'marketing' is not one of" in result.stderr
    assert suppression(config, "list").stdout.strip() == "no entries"
    no_column = tmp_path / "nocol.csv"
    no_column.write_text("email\nok@example.org\n")
    result = suppression(config, "import", str(no_column))
    assert result.returncode == EXIT_USAGE and "line 1: no recipient column" in result.stderr


def test_never_creates_a_store(tmp_path: Path) -> None:
    config = config_for(tmp_path, f"sqlite:///{tmp_path / 'state' / 'events.sqlite3'}")
    result = suppression(config, "add", "a@example.org")
    assert result.returncode == EXIT_UNAVAILABLE and "nothing was created" in result.stderr
    assert not (tmp_path / "state").exists()


def test_entries_made_by_the_cli_are_the_stores(config: Path, store_url: str) -> None:  # noqa: F811
    assert suppression(config, "add", "z@example.org").returncode == 0
    with contextlib.closing(open_store(store_url)) as store:
        assert [e.recipient for e in list_entries(store)] == ["z@example.org"]
