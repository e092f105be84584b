"""Protocol-level checks with OpenDKIM's miltertest: what the milter asks of the MTA.

miltertest plays the MTA side of the milter protocol from a Lua script, so these tests see
the exact actions (header deletion, body replacement, reply codes) and the negotiated
capabilities, independently of Postfix.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.events.store import open_store

from .harness.smtpapi import RunningMilter

if shutil.which("miltertest") is None:  # the Makefile installs it: a skip would hide that
    pytest.fail("miltertest not installed (Debian package miltertest)", pytrace=False)

PRELUDE = """
conn = mt.connect("inet:{port}@127.0.0.1", 40, 0.25)
if conn == nil then error("mt.connect failed") end
mt.macro(conn, SMFIC_CONNECT, "j", "mta.test")
if mt.conninfo(conn, "client.example", "127.0.0.1") ~= nil then error("conninfo") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("conninfo reply") end
if mt.helo(conn, "client.example") ~= nil then error("helo") end
mt.macro(conn, SMFIC_MAIL, "i", "4ABCDEF")
if mt.mailfrom(conn, "<news@example.com>") ~= nil then error("mailfrom") end
if mt.rcptto(conn, "<jane@example.org>") ~= nil then error("rcptto") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("rcptto reply") end
"""

MESSAGE = """
mt.header(conn, "From", "news@example.com")
mt.header(conn, "X-MSYS-API", '{header}')
mt.header(conn, "Content-Type", "text/html; charset=utf-8")
mt.eoh(conn)
mt.bodystring(conn, "<html><body><a href=\\"https://example.com/\\">x</a></body></html>\\r\\n")
if mt.eom(conn) ~= nil then error("eom") end
"""

TRACKED = """
if mt.getreply(conn) ~= SMFIR_ACCEPT then error("eom reply is not accept") end
if not mt.eom_check(conn, MT_HDRDELETE, "X-MSYS-API") then error("X-MSYS-API kept") end
if not mt.eom_check(conn, MT_BODYCHANGE) then error("body not replaced") end
mt.disconnect(conn)
"""


def run_script(tmp_path, milter: RunningMilter, script: str, prelude: str = PRELUDE) -> None:
    path = tmp_path / "test.lua"
    path.write_text(prelude.format(port=milter.port) + script)
    result = subprocess.run(
        ["miltertest", "-s", str(path)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.fixture()
def milter(tmp_path):
    with RunningMilter(tmp_path) as running:
        yield running


def test_tracked_message_deletes_header_and_replaces_body(tmp_path, milter):
    header = '{"options": {"open_tracking": true, "click_tracking": true}}'
    run_script(tmp_path, milter, MESSAGE.format(header=header) + TRACKED)


def test_invalid_header_is_a_reply_not_an_accept(tmp_path, milter):
    script = (
        MESSAGE.format(header='{"tags": "x"}')
        + """
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("expected a reply code") end
if mt.eom_check(conn, MT_BODYCHANGE) then error("body changed on a rejected message") end
mt.disconnect(conn)
"""
    )
    run_script(tmp_path, milter, script)


def test_second_recipient_gets_a_reply_code_under_defer(tmp_path):
    script = """
if mt.rcptto(conn, "<second@example.org>") ~= nil then error("rcptto") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("second rcpt not deferred") end
mt.disconnect(conn)
"""
    with RunningMilter(tmp_path, smtpapi={"multi_recipient": "defer"}) as milter:
        run_script(tmp_path, milter, script)


def test_second_recipient_is_accepted_by_default(tmp_path, milter):
    script = """
if mt.rcptto(conn, "<second@example.org>") ~= nil then error("rcptto") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("second rcpt refused") end
mt.disconnect(conn)
"""
    run_script(tmp_path, milter, script)


def test_capabilities_are_exactly_the_actions_used(tmp_path, milter):
    script = """
for _, action in ipairs({SMFIF_CHGBODY, SMFIF_CHGHDRS, SMFIF_ADDHDRS, SMFIF_DELRCPT,
                         SMFIF_CHGFROM}) do
    if not mt.test_action(conn, action) then error("missing action " .. action) end
end
for _, action in ipairs({SMFIF_ADDRCPT, SMFIF_QUARANTINE}) do
    if mt.test_action(conn, action) then error("needless action " .. action) end
end
mt.disconnect(conn)
"""
    run_script(tmp_path, milter, script)


AUTH_PRELUDE = PRELUDE.replace(
    'mt.macro(conn, SMFIC_MAIL, "i", "4ABCDEF")',
    'mt.macro(conn, SMFIC_MAIL, "i", "4ABCDEF", "{{auth_authen}}", "customer-7")',
)


def test_smtp_auth_user_is_the_customer_in_the_injection_event(tmp_path, milter):
    header = '{"options": {"open_tracking": true, "click_tracking": true}}'
    run_script(tmp_path, milter, MESSAGE.format(header=header) + TRACKED, AUTH_PRELUDE)
    store = open_store(load_config(str(milter.config_path)).event_store_url)
    try:
        (event,) = store.query(types=["injection"])
    finally:
        store.close()
    assert (event["customer_id"], event["rcpt_to"]) == ("customer-7", "jane@example.org")


FAILING_POLICY = "def validate_data_spool(ctx):\n    raise RuntimeError('policy bug')\n"
UNTRACKED = """
if mt.getreply(conn) ~= SMFIR_ACCEPT then error("eom reply is not accept") end
if not mt.eom_check(conn, MT_HDRDELETE, "X-MSYS-API") then error("X-MSYS-API kept") end
if mt.eom_check(conn, MT_BODYCHANGE) then error("body changed though failing open") end
mt.disconnect(conn)
"""
TEMPFAILED = """
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("expected a reply code") end
if mt.eom_check(conn, MT_BODYCHANGE) then error("body changed on a tempfailed message") end
mt.disconnect(conn)
"""


@pytest.mark.parametrize("on_error, expect", [("tempfail", TEMPFAILED), ("accept", UNTRACKED)])
def test_policy_error_follows_on_error(tmp_path, on_error, expect):
    header = '{"options": {"open_tracking": true, "click_tracking": true}}'
    running = RunningMilter(tmp_path, milter={"on_error": on_error})
    running.write_policy("broken.py", FAILING_POLICY)
    with running:
        run_script(tmp_path, running, MESSAGE.format(header=header) + expect)
    assert any(line.get("event") == "policy raised" for line in running.log_lines())


# An MTA that does not offer body replacement (SMFIF_CHGBODY): applying the rewrite raises
# inside the milter's end of message, which pymilter alone would answer with its anonymous
# "451 4.3.0 pymilter: untrapped exception" (tests/test_milter_trap.py has every callback).
NO_CHGBODY = PRELUDE.replace(
    "mt.macro(conn, SMFIC_CONNECT",  # the first command would negotiate the defaults
    "local offered = SMFIF_ADDHDRS + SMFIF_CHGHDRS + SMFIF_DELRCPT + SMFIF_CHGFROM\n"
    # Debian's miltertest takes the actions as the fourth argument and the protocol steps
    # as the third (its manual says the reverse): observed in what a milter is offered.
    'if mt.negotiate(conn, nil, nil, offered) ~= nil then error("negotiate") end\n'
    "mt.macro(conn, SMFIC_CONNECT",
    1,
)
OUR_451 = """
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("expected a reply code") end
if not mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0",
                    "smtpapi internal error, try again later") then
    error("not the milter's own 451 4.3.0")
end
mt.disconnect(conn)
"""


def test_exception_in_a_callback_is_our_451_and_logged(tmp_path, milter):
    header = '{"options": {"open_tracking": true, "click_tracking": true}}'
    run_script(tmp_path, milter, MESSAGE.format(header=header) + OUR_451, NO_CHGBODY)
    (line,) = milter.wait_for_log("untrapped exception")
    assert (line["stage"], line["queue_id"]) == ("eom", "4ABCDEF")
    assert "DisabledAction: MODBODY" in line["exception"]  # pymilter's name for CHGBODY
