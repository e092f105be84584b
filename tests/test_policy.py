"""Policies and settings: phase hooks, scopes, string-only values, limits, precedence."""

import os
import shutil
import time
from pathlib import Path

import pytest

from smtpapi_milter import context as cv
from smtpapi_milter.config import SmtpapiConfig
from smtpapi_milter.context import Variables
from smtpapi_milter.envelope import Envelope
from smtpapi_milter.policy import (
    POLICY_FAILED_TEXT,
    PolicyContext,
    PolicyFailure,
    PolicyLoadError,
    PolicySet,
    PolicyVerdict,
)
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.settings import TagRegistry, resolve
from smtpapi_milter.xmsysapi import XMsysApi, parse

REPO = Path(__file__).resolve().parents[1]


def policy_dir(tmp_path, **files):
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        path = d / f"{name}.py"
        path.write_text(text)
        path.chmod(0o644)
    return d


def run(policies, phase, recipient=None, variables=None, envelope=None):
    variables = variables if variables is not None else Variables()
    ctx = PolicyContext(phase, envelope or Envelope(), variables, recipient)
    policies.run(phase, ctx)
    return variables


def test_files_load_in_name_order(tmp_path):
    d = policy_dir(
        tmp_path,
        b_second="def validate_connect(ctx):\n    ctx.set('order', ctx.get('order') + 'b')\n",
        a_first="def validate_connect(ctx):\n    ctx.set('order', 'a')\n",
    )
    assert run(PolicySet.load(d), "validate_connect")["order"] == "ab"


def test_the_set_knows_which_phases_are_hooked(tmp_path):
    # The pipeline makes no context for a phase nobody hooks (three or more per message).
    d = policy_dir(tmp_path, a="def validate_rcptto(ctx):\n    pass\n", b="X = 1\n")
    policies = PolicySet.load(d)
    assert policies.has_hook("validate_rcptto")
    assert not policies.has_hook("validate_connect")
    assert not PolicySet.empty().has_hook("validate_data_spool")


def test_missing_directory_is_no_policies(tmp_path):
    assert PolicySet.load(tmp_path / "absent").policies == ()


def test_non_string_values_raise_and_tempfail(tmp_path):
    d = policy_dir(
        tmp_path, p="def validate_mailfrom(ctx):\n    ctx.set('smtpapi_open_tracking', 0)\n"
    )
    with pytest.raises(PolicyFailure) as info:
        run(PolicySet.load(d), "validate_mailfrom")
    assert str(info.value.reply) == "451 4.3.0 temporary failure in message policy, try again later"


def test_raising_policy_gives_451_and_logs_traceback(tmp_path, capsys):
    d = policy_dir(tmp_path, broken="def validate_rcptto(ctx):\n    raise KeyError('boom')\n")
    with pytest.raises(PolicyFailure) as info:
        run(PolicySet.load(d), "validate_rcptto", "a@example.com")
    assert (info.value.reply.code, info.value.reply.status) == ("451", "4.3.0")


def test_policy_verdicts_keep_their_code_and_text(tmp_path):
    d = policy_dir(
        tmp_path,
        p=(
            "def validate_rcptto(ctx):\n"
            "    if ctx.recipient == 'bad@example.com':\n"
            "        ctx.reject('no such user\\r\\nInjected: yes', '550', '5.1.1')\n"
            "    ctx.tempfail('greylisted')\n"
        ),
    )
    policies = PolicySet.load(d)
    with pytest.raises(PolicyVerdict) as info:
        run(policies, "validate_rcptto", "bad@example.com")
    # CR/LF in a policy's text cannot smuggle a second reply line.
    assert str(info.value.reply) == "550 5.1.1 no such user Injected: yes"
    with pytest.raises(PolicyVerdict) as info:
        run(policies, "validate_rcptto", "ok@example.com")
    assert str(info.value.reply) == "451 4.7.1 greylisted"


def test_world_or_group_writable_policy_refused(tmp_path):
    d = policy_dir(tmp_path, open_door="def validate_connect(ctx):\n    pass\n")
    (d / "open_door.py").chmod(0o666)
    with pytest.raises(PolicyLoadError, match="writable by group or others"):
        PolicySet.load(d)
    (d / "open_door.py").chmod(0o664)
    with pytest.raises(PolicyLoadError, match="open_door.py"):
        PolicySet.load(d)


def test_syntax_error_names_the_file(tmp_path):
    d = policy_dir(tmp_path, good="x = 1\n", broken="def validate_connect(ctx:\n")
    with pytest.raises(PolicyLoadError, match=r"broken\.py: SyntaxError"):
        PolicySet.load(d)


def test_policy_reads_envelope_headers_and_macros(tmp_path):
    d = policy_dir(
        tmp_path,
        p=(
            "def validate_data_spool(ctx):\n"
            "    ctx.set('seen', '|'.join([ctx.mail_from, ctx.header('Subject'),\n"
            "        ctx.macro('{auth_authen}'), ctx.client_address, ctx.helo,\n"
            "        str(len(ctx.recipients))]))\n"
        ),
    )
    envelope = Envelope(
        client_address="192.0.2.1",
        helo="mx.example.com",
        mail_from="s@example.com",
        recipients=["a@example.org"],
        macros={"{auth_authen}": "alice"},
        headers=[("Subject", b" =?utf-8?q?caf=C3=A9?=\r\n  menu")],
    )
    seen = run(PolicySet.load(d), "validate_data_spool", envelope=envelope)["seen"]
    assert seen == "s@example.com|café menu|alice|192.0.2.1|mx.example.com|1"


def test_shipped_example_policies_load_and_work():
    policies = PolicySet.load(REPO / "policies")
    assert [p.name for p in policies.policies] == ["example.py", "https_tracking_domain.py"]
    connection = Variables()
    run(
        policies,
        "validate_connect",
        variables=connection,
        envelope=Envelope(macros={"{daemon_name}": "brand-a"}),
    )
    assert connection["smtpapi_tracking_domain"] == "click.brand-a.example"
    recipient = connection.child()
    run(policies, "validate_data_spool_each_rcpt", "boss@EXAMPLE.NET", recipient)
    assert recipient["smtpapi_open_tracking"] == "0"
    assert "smtpapi_open_tracking" not in connection


# --- settings: precedence, limits, tags -------------------------------------------------


def settings(config=None, header=None, **variables):
    scope = Variables()
    for name, value in variables.items():
        scope.set(name, value)
    return resolve(config or SmtpapiConfig(), header, scope, TagRegistry())


def test_precedence_policy_over_header_over_config():
    config = SmtpapiConfig(open_tracking_enabled=False, click_tracking_enabled=True)
    assert settings(config).open_tracking is False
    header = parse(b'{"options": {"open_tracking": true, "click_tracking": false}}')
    assert settings(config, header).open_tracking is True
    assert settings(config, header).click_tracking is False
    assert settings(config, header, smtpapi_open_tracking="0").open_tracking is False
    assert settings(config, header, smtpapi_click_tracking="TRUE").click_tracking is True


def test_recipient_scope_does_not_leak():
    message = Variables()
    message.set(cv.OPEN_TRACKING, "1")
    first, second = message.child(), message.child()
    first.set(cv.OPEN_TRACKING, "false")
    registry = TagRegistry()
    assert resolve(SmtpapiConfig(), None, first, registry).open_tracking is False
    assert resolve(SmtpapiConfig(), None, second, registry).open_tracking is True


def test_schemes_domain_expiry_from_policy_only():
    s = settings(
        smtpapi_click_tracking_scheme="HTTPS",
        smtpapi_tracking_domain="t.example.com:8443",
        smtpapi_tracking_link_expiry="0",
    )
    assert (s.click_scheme, s.open_scheme) == ("https", "http")
    assert (s.tracking_domain, s.link_expiry) == ("t.example.com:8443", 0)


@pytest.mark.parametrize(
    "name, value",
    [
        ("smtpapi_open_tracking", "yes"),
        ("smtpapi_click_tracking", ""),
        ("smtpapi_click_tracking_scheme", "ftp"),
        ("smtpapi_tracking_domain", "evil.example/path"),
        ("smtpapi_tracking_link_expiry", "-1"),
        ("smtpapi_metadata", "[1]"),
        ("smtpapi_tags", '"cat"'),
        ("smtpapi_tags", "[1, 2]"),
    ],
)
def test_bad_context_values_reject_naming_the_variable(name, value):
    with pytest.raises(SmtpReplyError) as info:
        settings(**{name: value})
    reply = info.value.reply
    assert (reply.code, reply.status) == ("550", "5.6.0")
    assert reply.text.startswith(name)


def test_campaign_limit_64_bytes_whatever_set_it():
    assert settings(smtpapi_campaign_id="c" * 64).campaign_id == "c" * 64
    for header, variables in (
        (XMsysApi(campaign_id="c" * 65), {}),
        (None, {"smtpapi_campaign_id": "é" * 33}),  # 66 bytes in 33 characters
    ):
        with pytest.raises(SmtpReplyError) as info:
            settings(None, header, **variables)
        assert (
            str(info.value.reply) == "550 5.6.0 smtpapi_campaign_id context is limited to 64 bytes"
        )


def test_metadata_limit_200_bytes_serialized():
    fits = {"k": "v" * 192}  # {"k":"vvv…"} is 200 bytes
    assert settings(None, XMsysApi(metadata=fits)).metadata == fits
    with pytest.raises(SmtpReplyError) as info:
        settings(None, XMsysApi(metadata={"k": "v" * 193}))
    assert str(info.value.reply) == "550 5.6.0 smtpapi_metadata context is limited to 200 bytes"


def test_eleven_tags_keep_ten():
    tags = [f"t{i}" for i in range(11)]
    assert settings(None, XMsysApi(tags=tags)).tags == tuple(tags[:10])


def test_system_wide_tag_limit_ignores_new_tags():
    registry = TagRegistry(limit=3)
    scope = Variables()
    scope.set(cv.TAGS, '["a", "b"]')
    assert resolve(SmtpapiConfig(), None, scope, registry).tags == ("a", "b")
    scope.set(cv.TAGS, '["c", "d", "a"]')
    assert resolve(SmtpapiConfig(), None, scope, registry).tags == ("c", "a")


def test_policy_dir_permissions_checked_even_for_copies(tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(REPO / "policies", d)
    for p in d.glob("*.py"):
        p.chmod(0o644)
    assert len(PolicySet.load(d).policies) == 2
    os.chmod(d / "example.py", 0o646)
    with pytest.raises(PolicyLoadError):
        PolicySet.load(d)


HANGING = """
import os, time

def validate_data_spool(ctx):
    while not os.path.exists({release!r}):
        time.sleep(0.01)
    try:
        ctx.set("late", "1")
    finally:
        open({done!r}, "w").close()
"""


def test_hanging_hook_is_cut_off_at_the_timeout(tmp_path):
    release, done = tmp_path / "release", tmp_path / "done"
    d = policy_dir(tmp_path, hang=HANGING.format(release=str(release), done=str(done)))
    variables = Variables()
    ctx = PolicyContext("validate_data_spool", Envelope(), variables)
    started = time.monotonic()
    with pytest.raises(PolicyFailure) as info:
        PolicySet.load(d).run("validate_data_spool", ctx, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert str(info.value.reply) == "451 4.3.0 " + POLICY_FAILED_TEXT
    release.touch()  # the hook wakes up late: its changes must not land anywhere
    deadline = time.monotonic() + 10
    while not done.exists():
        assert time.monotonic() < deadline, "hook never finished"
        time.sleep(0.01)
    assert "late" not in variables


def test_hooks_under_a_timeout_still_set_reject_and_raise(tmp_path):
    d = policy_dir(
        tmp_path,
        a="def validate_rcptto(ctx):\n    ctx.set('smtpapi_campaign_id', 'c1')\n",
        b="def validate_mailfrom(ctx):\n    ctx.reject('no', code='550', status='5.7.1')\n",
        c="def validate_connect(ctx):\n    raise KeyError('bug')\n",
    )
    policies = PolicySet.load(d)

    def call(phase: str) -> Variables:
        variables = Variables()
        policies.run(phase, PolicyContext(phase, Envelope(), variables), timeout=5)
        return variables

    for _ in range(3):  # the runner's threads are reused between calls
        assert call("validate_rcptto")["smtpapi_campaign_id"] == "c1"
    with pytest.raises(PolicyVerdict) as info:
        call("validate_mailfrom")
    assert str(info.value.reply) == "550 5.7.1 no"
    with pytest.raises(PolicyFailure):
        call("validate_connect")
