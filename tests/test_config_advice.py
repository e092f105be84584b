"""Valid settings that defeat their purpose are said, not refused: list_unsubscribe with an
http click scheme gives a one-click header that Gmail and Yahoo ignore (RFC 8058 3.1)."""

from __future__ import annotations

import pytest

from .harness.smtpapi import RunningMilter, toml
from .test_check_and_start import cli

WARNING = "RFC 8058 one-click needs an https URL"


@pytest.fixture()
def write_config(tmp_path):
    def write(**sections: dict):
        path = tmp_path / "smtpapi-milter.toml"
        sections.setdefault("policy", {})["directory"] = str(tmp_path / "no-policies")
        named = {k.replace("__", "."): v for k, v in sections.items()}
        path.write_text(toml(named, {"state_dir": str(tmp_path / "state")}))
        return path

    return write


def test_check_warns_about_one_click_over_http_naming_the_file_and_section(write_config):
    path = write_config(smtpapi={"list_unsubscribe": True})  # click scheme: http by default
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr  # said, not refused
    (line,) = [line for line in result.stderr.splitlines() if WARNING in line]
    assert line.startswith(f"warning: {path}: 'smtpapi': list_unsubscribe is on")


def test_check_names_the_listener_whose_override_needs_https(write_config):
    path = write_config(
        smtpapi={"click_tracking_scheme": "https", "list_unsubscribe": True},
        smtpapi__listener__lab={"click_tracking_scheme": "http"},
    )
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1 and "'smtpapi.listener.lab'" in warnings[0]


def test_no_advice_for_https_or_without_list_unsubscribe(write_config):
    for smtpapi in ({"click_tracking_scheme": "https", "list_unsubscribe": True}, {}):
        result = cli("check", "--config", str(write_config(smtpapi=smtpapi)))
        assert result.returncode == 0 and "warning:" not in result.stderr, result.stderr


def test_the_milter_logs_the_advice_when_it_starts(tmp_path):
    with RunningMilter(tmp_path, smtpapi={"list_unsubscribe": True}) as milter:
        (line,) = milter.wait_for_log("configuration advice")
        assert WARNING in line["advice"]
