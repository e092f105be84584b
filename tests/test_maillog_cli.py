"""The follower's command line: `check` validates [maillog], `maillog` refuses without a
source, and `run` supervises it as a third child that outlives a SIGHUP and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from smtpapi_milter.events.store import open_store
from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_port

from . import maillog_lines as pf
from .harness.smtpapi import toml
from .test_check_and_start import ENV, EXIT_CONFIG, cli
from .test_maillog_follower import injection, qid

CLI = [sys.executable, "-m", "smtpapi_milter.cli"]


@pytest.fixture()
def config_with(tmp_path):
    """A configuration file with these sections, its state and policies in tmp_path."""

    def write(**sections: dict):
        path = tmp_path / "smtpapi-milter.toml"
        sections.setdefault("policy", {})["directory"] = str(tmp_path / "no-policies")
        path.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
        return path

    return write


@pytest.mark.parametrize(
    ("maillog", "message"),
    [
        ({"source": "var/log/mail.log"}, "'maillog.source' 'var/log/mail.log' must be"),
        ({"source": "/nonexistent-dir/mail.log"}, "directory /nonexistent-dir does not exist"),
        ({"format": "exim"}, "'maillog.format' must be one of 'postfix', 'sendmail'"),
        ({"source": "/tmp/x.log", "bounce_rules": "rules.toml"}, "must be an absolute path"),
        ({"batch_lines": 0}, "'maillog.batch_lines' and 'maillog.poll_interval' must be"),
    ],
)
def test_check_refuses_a_bad_maillog_section(config_with, maillog, message):
    result = cli("check", "--config", str(config_with(maillog=maillog)))
    assert result.returncode == EXIT_CONFIG, result.stdout
    assert message in result.stderr


def test_check_loads_the_operators_bounce_rules(config_with, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nclass = 99\ntext = "x"\n')
    config = config_with(maillog={"source": str(tmp_path / "mail.log"), "bounce_rules": str(rules)})
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert "'maillog.bounce_rules'" in result.stderr and str(rules) in result.stderr
    rules.write_text('[[rule]]\nclass = 10\ntext = "no such mailbox"\n')
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f'source = "{tmp_path / "mail.log"}"' in result.stdout


def test_maillog_without_a_source_says_so(config_with):
    result = cli("maillog", "--config", str(config_with()))
    assert result.returncode == EXIT_CONFIG
    assert "[maillog] source is not set" in result.stderr


def test_run_supervises_the_follower_through_sighup_and_stops_it_on_sigterm(config_with, tmp_path):
    log = tmp_path / "mail.log"
    log.touch()
    milter, tracker, admin = free_port(), free_port(), free_port()
    (tmp_path / "no-policies").mkdir()
    config = config_with(
        milter={"socket": f"inet:{milter}@127.0.0.1", "metrics_listen": f"127.0.0.1:{free_port()}"},
        engagement_tracker={"listen": f"127.0.0.1:{tracker}", "admin_listen": f"127.0.0.1:{admin}"},
        maillog={"source": str(log), "poll_interval": 0.05},
    )
    store = open_store(f"sqlite:///{tmp_path}/state/events.sqlite3")
    store.record([injection(0), injection(3)])
    process = subprocess.Popen(
        [*CLI, "run", "--config", str(config)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", milter, deadline_in(60))
        log.write_text(pf.sent(time.time(), qid(0), "r0@example.org") + "\n")
        wait_for_delivery(store, qid(0))
        children = child_pids(process.pid)
        assert len(children) == 3  # milter, tracker, maillog
        process.send_signal(signal.SIGHUP)
        with log.open("a") as handle:
            handle.write(pf.sent(time.time(), qid(3), "r3@example.org") + "\n")
        wait_for_delivery(store, qid(3))
        assert child_pids(process.pid) == children  # none died of the SIGHUP
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        leftovers = subprocess.run(
            ["pgrep", "-s", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert leftovers == [], f"processes left behind: {leftovers}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        store.close()


def wait_for_delivery(store, queue_id: str) -> None:
    deadline = time.monotonic() + 30
    while not [e for e in store.query(types=["delivery"]) if e["mta_queue_id"] == queue_id]:
        assert time.monotonic() < deadline, f"no delivery for {queue_id}"
        time.sleep(0.05)


def child_pids(parent: int) -> set[str]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    return set(found.stdout.split())
