"""What an operator's commands leave behind and print, through the real CLI.

- `events` and `erase` never create a store, and run as root they act as the store's owner
  (issue 14 item 5: root-owned state once broke the service);
- `check` prints no secret (issue 15 item 6);
- `events` prints no terminal control sequence a sender or reader put into an event
  (issue 15 item 10).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpapi_milter.events.store import open_store

from .harness.smtpapi import toml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
EXIT_UNAVAILABLE = 4
ESC_CAMPAIGN = "spring\x1b]0;pwned\x07\x1b[2J\x9b31m"
ESC_LINK = "https://x.io/\u202etxt.exe\x1b[8m"


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", *args],
        env=ENV,
        capture_output=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, state_dir: Path, **sections: dict) -> Path:
    path = tmp_path / "smtpapi-milter.toml"
    sections.setdefault("policy", {})["directory"] = str(tmp_path / "no-policies")
    path.write_text(toml(sections, {"state_dir": str(state_dir)}))
    return path


def click(event_id: str, campaign: str, link: str) -> dict:
    return {
        "event_id": event_id,
        "type": "click",
        "timestamp": "1764800000",
        "campaign_id": campaign,
        "rcpt_to": "jane@example.org",
        "target_link_url": link,
        "target_link_name": "offer",
        "user_agent_parsed": {"machine_reason": ""},
    }


def store_events(state_dir: Path, *events: dict) -> None:
    with contextlib.closing(open_store(f"sqlite:///{state_dir / 'events.sqlite3'}")) as store:
        store.record(list(events))


@pytest.fixture()
def nobody_state() -> Iterator[Path]:
    """A state directory owned by `nobody` as the service's user, with one stored event
    (outside pytest's 0700 tmp_path, so that its owner can reach it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the commands are run as root on a store another user owns")
    nobody = pwd.getpwnam("nobody")
    state = Path(tempfile.mkdtemp(prefix="smtpapi-state-"))
    store_events(state, click("e1", "c1", "https://example.com/"))
    for path in [state, *state.iterdir()]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    yield state
    subprocess.run(["rm", "-rf", str(state)], check=True)


# --- issue 14 item 5 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["events"], ["events", "--format", "json"], ["erase", "jane@example.org"]]
)
def test_operator_commands_never_create_a_store(tmp_path, command):
    state = tmp_path / "state"
    config = write_config(tmp_path, state)
    result = cli(*command, "--config", str(config))
    assert result.returncode == EXIT_UNAVAILABLE
    assert f"no event store at {state}/events.sqlite3" in result.stderr.decode()
    assert "nothing was created" in result.stderr.decode()
    assert not state.exists()


def test_root_runs_events_and_erase_as_the_stores_owner(tmp_path, nobody_state):
    config = write_config(tmp_path, nobody_state)
    result = cli("events", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "jane@example.org" in result.stdout.decode()
    result = cli("erase", "--config", str(config), "jane@example.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"erased 1 events of jane@example.org")
    nobody = pwd.getpwnam("nobody").pw_uid
    owners = {path.name: path.stat().st_uid for path in [nobody_state, *nobody_state.iterdir()]}
    assert set(owners.values()) == {nobody}, owners
    assert "events.sqlite3.writer-lock" in owners  # the store was written, as nobody


# --- issue 15 item 6 ------------------------------------------------------------------------

SECRETS = {
    "admin_token": "AdminTokenS3cret",
    "key1": "Q0FGRUJBQkVDQUZFQkFCRUNBRkVCQUJFQ0FGRUJBQkU",
    "key2": "REVBREJFRUZERUFEQkVFRkRFQURCRUVGREVBREJFRUY",
    "db_password": "DbPassw0rdS3cret",
    "db_query_password": "DbQueryPassS3cret",
    "hook_password": "HookBasicPassS3cret",
    "hook_token": "HookBearerTokenS3cret",
    "hmac_secret": "HookHmacS3cret",
    "url_apikey": "UrlApiKeyS3cret",
    "url_password": "UrlUserinfoS3cret",
}


def test_check_prints_no_secret(tmp_path):
    s = SECRETS
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[policy]\ndirectory = "{tmp_path / "no-policies"}"\n'
        "[engagement_tracker]\n"
        f'admin_token = "{s["admin_token"]}"\n'
        f'keys = ["new:{s["key1"]}", "old:{s["key2"]}"]\n'
        "[events]\n"
        f'store = "postgresql://events:{s["db_password"]}@db.internal/events'
        f'?password={s["db_query_password"]}&sslmode=require"\n'
        "[[webhooks]]\n"
        'url = "https://hooks.example.com/basic"\nauth = "basic"\nusername = "crm"\n'
        f'password = "{s["hook_password"]}"\nhmac_secret = "{s["hmac_secret"]}"\n'
        "[[webhooks]]\n"
        f'url = "https://hooks.example.com/bearer?apikey={s["url_apikey"]}&v=2"\n'
        f'auth = "bearer"\ntoken = "{s["hook_token"]}"\n'
        "[[webhooks]]\n"
        f'url = "https://crm:{s["url_password"]}@hooks.example.com/userinfo"\n'
    )
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).decode()
    leaked = [name for name, secret in s.items() if secret in output]
    assert not leaked, output
    # What is not secret still shows, and that a secret is set shows too.
    assert 'admin_token = "***"' in output and 'keys = ["new:***", "old:***"]' in output
    assert "postgresql://events:***@db.internal/events?password=***&sslmode=require" in output
    assert "https://hooks.example.com/bearer?apikey=***&v=2" in output
    assert 'username = "crm"' in output and "signing with 'new'" in output


# --- issue 15 item 10 -----------------------------------------------------------------------


def test_events_table_shows_control_characters_as_escapes(tmp_path):
    state = tmp_path / "state"
    store_events(state, click("e1", ESC_CAMPAIGN, ESC_LINK))
    config = write_config(tmp_path, state)
    result = cli("events", "--config", str(config))
    assert result.returncode == 0, result.stderr
    table = result.stdout.decode()
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in table
    # Visible for a person to see (cut to the column's width like any long value).
    assert "spring\\x1b]0;pwned\\…" in table
    assert "offer: https://x.io/\\u202etxt.exe\\x1b[8m" in table


def test_events_json_stays_json_and_terminal_safe(tmp_path):
    state = tmp_path / "state"
    store_events(state, click("e1", ESC_CAMPAIGN, ESC_LINK))
    config = write_config(tmp_path, state)
    result = cli("events", "--config", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in text
    (event,) = [json.loads(line) for line in text.splitlines()]
    assert (event["campaign_id"], event["target_link_url"]) == (ESC_CAMPAIGN, ESC_LINK)


def test_rewrite_as_root_creates_no_key_in_another_users_state_dir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    state = Path(tempfile.mkdtemp(prefix="smtpapi-state-"))
    try:
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        config = write_config(tmp_path, state)
        message = b"From: a@example.com\r\nTo: b@example.org\r\n\r\nhttps://example.com/\r\n"
        (tmp_path / "m.eml").write_bytes(message)
        result = cli("rewrite", "--config", str(config), str(tmp_path / "m.eml"))
        assert result.returncode == 3
        assert "start the service once" in result.stderr.decode()
        assert list(state.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(state)], check=True)
