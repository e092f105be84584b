"""No exception leaves a milter callback: each becomes a logged 451 4.3.0 of ours.

pymilter answers an exception escaping a callback with an anonymous "451 4.3.0 pymilter:
untrapped exception" and puts the traceback on stderr only (seen once in a milter benchmark).
These tests make each callback fail and check the verdict the MTA reads (at once, or at end
of message for the steps Postfix expects no reply to), the log line with queue id and
traceback, and that the transaction count a drain waits for does not leak.

The adapter runs in process against test_milter_errors' Recorder in place of libmilter's
context. Faults are real where a real cause exists (a temporary directory that is gone, an
MTA that does not offer body replacement); elsewhere a named internal step is monkeypatched
to raise, each marked as such. tests/test_miltertest.py drives the real milter process.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterator

import Milter
import pytest
import structlog

from smtpapi_milter import logs
from smtpapi_milter.mta.milter import ACTIONS, SmtpapiMilter
from smtpapi_milter.mta.state import MilterState

from .test_milter_errors import BODY, TRACK, Recorder
from .test_milter_errors import state_for as state_for  # the fixture

INTERNAL = ("setreply", "451", "4.3.0", "smtpapi internal error, try again later")
# What Postfix negotiates: no replies to header, end of header and body steps.
NO_REPLY_STEPS = Milter.P_NR_HDR | Milter.P_NR_EOH | Milter.P_NR_BODY


@pytest.fixture()
def json_log() -> Iterator[io.StringIO]:
    """The milter's JSON log lines as the CLI configures them, rendered tracebacks included."""
    saved = structlog.get_config()
    stream = io.StringIO()
    logs.configure(stream=stream, json=True)
    yield stream
    structlog.configure(**saved)


def untrapped(stream: io.StringIO) -> list[dict]:
    lines = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == "untrapped exception"]


class Transaction:
    """One message through a fresh adapter, step by step, recording each verdict."""

    def __init__(self, state: MilterState, actions: int = ACTIONS):
        self.state = state
        self.milter = SmtpapiMilter(state)
        self.milter._ctx = self.mta = Recorder()
        self.milter._actions, self.milter._protocol = actions, NO_REPLY_STEPS
        self.verdicts: dict[str, int] = {}

    def run(
        self,
        until: str = "close",
        before: Callable[[str], None] = lambda step: None,
        start: str = "connect",
    ) -> Transaction:
        """Steps from ``start`` to ``until`` (abort only if asked for); after a refusal only
        close, as the MTA does. ``before`` is called with each step's name first."""
        m = self.milter
        steps = [
            ("connect", lambda: m.connect("client.example", 2, ("127.0.0.1", 40000))),
            ("helo", lambda: m.hello("client.example")),
            ("mail", lambda: m.envfrom("<news@example.com>")),
            ("rcpt", lambda: m.envrcpt("<jane@example.org>")),
            ("header", lambda: m.header("X-MSYS-API", TRACK)),
            ("header2", lambda: m.header("Content-Type", b" text/html; charset=utf-8")),
            ("eoh", m.eoh),
            ("body", lambda: m.body(BODY)),
            ("body2", lambda: m.body(BODY)),
            ("abort", m.abort),  # the client gave up (RSET or QUIT) before the end
            ("eom", m.eom),
            ("close", m.close),
        ]
        names = [step for step, _ in steps]
        refused = False
        for step, call in steps[names.index(start) :]:
            if (step == "abort" and until != "abort") or (refused and step != "close"):
                continue
            before(step)
            self.verdicts[step] = call()
            if step == until:
                break
            refused = self.verdicts[step] in (Milter.TEMPFAIL, Milter.REJECT)
        return self

    @property
    def transactions(self) -> int:
        return self.state._transactions


def test_body_spool_that_cannot_be_written_tempfails_at_end_of_message(
    state_for, json_log, tmp_path, monkeypatch
):
    # Real cause: the spool goes to disk past spool_memory_limit, into a temporary directory
    # that no longer exists (or a full disk): the write raises in the body callback.
    t = Transaction(state_for(spool_memory_limit=16))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    t.run()
    # No reply owed to Postfix at the body step; the second chunk does not try again.
    assert t.verdicts["body"] == t.verdicts["body2"] == Milter.NOREPLY
    assert t.verdicts["eom"] == Milter.TEMPFAIL
    assert t.mta.calls == [INTERNAL]
    (line,) = untrapped(json_log)
    assert (line["stage"], line["queue_id"]) == ("body", "QUEUEID1")
    assert "FileNotFoundError" in line["exception"] and "Traceback" in line["exception"]
    assert t.transactions == 0


def test_mta_without_body_replacement_tempfails_with_our_reply(state_for, json_log):
    # Real cause: an MTA that does not offer SMFIF_CHGBODY; applying the rewrite raises
    # pymilter's DisabledAction half way through the edits. The MTA drops the edits with
    # the tempfail, so the client's retry sends the message whole.
    t = Transaction(state_for(), actions=ACTIONS & ~Milter.CHGBODY).run()
    assert t.verdicts["eom"] == Milter.TEMPFAIL
    assert t.mta.calls[-1] == INTERNAL
    (line,) = untrapped(json_log)
    assert (line["stage"], line["queue_id"]) == ("eom", "QUEUEID1")
    assert "DisabledAction: MODBODY" in line["exception"]  # pymilter's name for CHGBODY
    assert t.transactions == 0


def test_mta_without_body_replacement_tempfails_even_with_on_error_accept(state_for, json_log):
    # Failing open after edits were half handed to the MTA could deliver a mangled message.
    t = Transaction(state_for(on_error="accept"), actions=ACTIONS & ~Milter.CHGBODY).run()
    assert t.verdicts["eom"] == Milter.TEMPFAIL
    assert t.mta.calls[-1] == INTERNAL


def test_header_that_cannot_be_kept_tempfails_at_end_of_message(state_for, json_log):
    class Exhausted(list):
        def append(self, item):  # injected fault: memory runs out keeping a header
            raise MemoryError

    def fault(step: str) -> None:
        if step == "header":
            t.milter.headers = Exhausted()

    t = Transaction(state_for())
    t.run(before=fault)
    assert t.verdicts["header"] == t.verdicts["header2"] == Milter.NOREPLY
    assert t.verdicts["body"] == Milter.NOREPLY
    assert t.verdicts["eom"] == Milter.TEMPFAIL
    assert t.mta.calls == [INTERNAL]
    (line,) = untrapped(json_log)
    assert (line["stage"], line["queue_id"]) == ("header", "QUEUEID1")
    assert "MemoryError" in line["exception"]


def test_failed_message_does_not_fail_the_next_one_on_the_connection(state_for, json_log):
    class Exhausted(list):
        def append(self, item):  # injected fault, as above
            raise MemoryError

    def fault(step: str) -> None:
        if step == "header":
            t.milter.headers = Exhausted()

    t = Transaction(state_for())
    t.run(until="eom", before=fault)
    assert t.verdicts["eom"] == Milter.TEMPFAIL
    t.run(start="mail")  # the next MAIL on the same connection
    assert t.verdicts["eom"] == Milter.ACCEPT


def raising(*args, **kwargs):
    raise RuntimeError("injected fault")


@pytest.mark.parametrize(
    "stage, target",
    [
        # Each names the internal step made to raise (injected faults, outside _guard).
        ("connect", "_macros"),
        ("mail", "_macros"),
        ("rcpt", "smtpapi_milter.mta.milter._address"),
    ],
)
def test_replying_step_that_raises_tempfails_at_once(
    state_for, json_log, monkeypatch, stage, target
):
    t = Transaction(state_for())

    def fault(step: str) -> None:
        if step == stage:
            if "." in target:
                monkeypatch.setattr(target, raising)
            else:
                monkeypatch.setattr(t.milter, target, raising)

    t.run(until=stage, before=fault)
    assert t.verdicts[stage] == Milter.TEMPFAIL
    assert t.mta.calls == [INTERNAL]
    (line,) = untrapped(json_log)
    assert line["stage"] == stage and "injected fault" in line["exception"]
    assert t.transactions == (1 if stage == "rcpt" else 0)  # a refused MAIL opens none


def test_abort_that_raises_is_logged_and_ends_the_transaction(state_for, json_log, monkeypatch):
    t = Transaction(state_for())

    def fault(step: str) -> None:
        if step == "abort":  # injected fault: resetting the session raises
            monkeypatch.setattr(t.milter.session, "reset", raising)

    t.run(until="abort", before=fault)
    assert t.verdicts["abort"] == Milter.CONTINUE  # libmilter reads no verdict here
    (line,) = untrapped(json_log)
    assert line["stage"] == "abort" and "injected fault" in line["exception"]
    assert t.transactions == 0 and t.milter.spool is None  # nothing held for a drain


def test_close_that_raises_is_logged(state_for, json_log, monkeypatch):
    t = Transaction(state_for())
    t.run(until="body")
    spool = t.milter.spool
    monkeypatch.setattr(t.milter, "_close_spool", raising)  # injected fault
    assert t.milter.close() == Milter.CONTINUE
    spool.close()
    (line,) = untrapped(json_log)
    assert line["stage"] == "close" and "injected fault" in line["exception"]
    assert t.transactions == 0


def test_reply_that_cannot_be_set_is_still_a_tempfail(state_for, json_log, monkeypatch):
    t = Transaction(state_for())

    def fault(step: str) -> None:
        if step == "rcpt":  # injected: the recipient step raises and so does setreply
            monkeypatch.setattr("smtpapi_milter.mta.milter._address", raising)
            monkeypatch.setattr(t.mta, "setreply", raising, raising=False)

    t.run(until="rcpt", before=fault)
    assert t.verdicts["rcpt"] == Milter.TEMPFAIL  # the MTA's own 4xx: never accepted
    assert [line["stage"] for line in untrapped(json_log)] == ["rcpt"]
