"""Adapter behaviour at unit level: internal errors (on_error), transmission ids (SPEC 8),
and the benchmark floor's body round trip.

The adapter runs against a recorder in place of libmilter's per-connection context (the
C object pymilter hands each callback): it keeps the replies and edits the adapter asks
for. Everything else is real: configuration, pipeline, SQLite event store.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import Milter
import pytest

from smtpapi_milter.config import parse_config
from smtpapi_milter.ids import IdGenerator
from smtpapi_milter.mta.milter import ACTIONS, SmtpapiMilter
from smtpapi_milter.mta.state import MilterState
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.replies import SmtpReplyError

from .harness.smtpapi import toml

TRACK = b' {"campaign_id": "c", "options": {"open_tracking": true, "click_tracking": true}}'
BODY = b'<html><body><a href="https://example.com/x">x</a></body></html>\r\n'
BENCH = Path(__file__).resolve().parents[1] / "bench"
ID_REPLY = ("421", "4.3.3", "[internal] smtpapi unable to generate unique transmission id")


class Recorder:
    """Stands in for libmilter's context: records what the adapter asks the MTA to do."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def getsymval(self, name: str) -> str | None:
        return {"i": "QUEUEID1"}.get(name)

    def __getattr__(self, action: str):
        return lambda *args: self.calls.append((action, *args))


@pytest.fixture()
def state_for(tmp_path):
    states = []

    def load(**milter) -> MilterState:
        config = tmp_path / "smtpapi-milter.toml"
        sections = {"milter": milter, "policy": {"directory": str(tmp_path / "none")}}
        config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
        states.append(MilterState.load(str(config)))
        return states[-1]

    yield load
    for state in states:
        state.close()


def with_ids(state: MilterState, ids: IdGenerator) -> MilterState:
    p = state.pipeline
    state.pipeline = Pipeline(p.config, p.policies, p.codec, ids=ids, tag_registry=p.tag_registry)
    return state


def send(state: MilterState) -> tuple[int, Recorder]:
    """One tracked message through a fresh adapter; (eom verdict, recorded MTA actions)."""
    milter = SmtpapiMilter(state)
    milter._ctx = recorder = Recorder()
    # What negotiation would have set: our actions, and no protocol bits (every reply sent).
    milter._actions, milter._protocol = ACTIONS, 0
    milter.connect("client.example", 2, ("127.0.0.1", 40000))
    milter.hello("client.example")
    milter.envfrom("<news@example.com>")
    milter.envrcpt("<jane@example.org>")
    for name, value in (("From", b" news@example.com"), ("X-MSYS-API", TRACK)):
        milter.header(name, value)
    milter.header("Content-Type", b" text/html; charset=utf-8")
    milter.eoh()
    milter.body(BODY)
    verdict = milter.eom()
    milter.close()
    return verdict, recorder


def broken_clock() -> int:
    raise ZeroDivisionError("a bug in our code, not the clock going back")


def test_internal_error_tempfails_by_default(state_for):
    verdict, mta = send(with_ids(state_for(), IdGenerator(0, broken_clock)))
    assert verdict == Milter.TEMPFAIL
    assert mta.calls == [("setreply", "451", "4.3.0", "smtpapi internal error, try again later")]


def test_internal_error_with_on_error_accept_delivers_untracked(state_for):
    state = with_ids(state_for(on_error="accept"), IdGenerator(0, broken_clock))
    verdict, mta = send(state)
    assert verdict == Milter.ACCEPT
    # The body goes out as it came; the X-MSYS-API header never reaches the recipient.
    assert mta.calls == [("chgheader", "X-MSYS-API", 1, None)]


def test_clock_gone_back_gives_momentums_421(state_for):
    now = [1_800_000_000_000]
    state = with_ids(state_for(), IdGenerator(0, lambda: now[0]))
    verdict, mta = send(state)
    assert verdict == Milter.ACCEPT  # ids are fine while the clock moves forward
    now[0] -= 1000  # NTP stepped the clock back a second: ids could repeat
    verdict, mta = send(state)
    assert verdict == Milter.TEMPFAIL
    assert mta.calls == [("setreply", *ID_REPLY)]


def test_clock_gone_back_at_the_pipeline():
    config = parse_config(
        {"state_dir": "/nonexistent", "smtpapi": {"click_tracking_enabled": True}}
    )
    now = [1_800_000_000_000]
    pipeline = Pipeline(config, ids=IdGenerator(0, lambda: now[0]))

    def message() -> None:
        session = pipeline.session()
        session.mail_from("news@example.com")
        session.rcpt("jane@example.org")
        session.end_of_message([("Content-Type", b" text/html")], BODY)

    message()
    now[0] -= 51  # more than ids.MAX_WAIT_MS: refused rather than waited out
    with pytest.raises(SmtpReplyError) as info:
        message()
    assert str(info.value.reply) == " ".join(ID_REPLY)


def test_benchmark_floor_hands_the_whole_body_back():
    """bench/passthrough_milter.py is a fair floor only if it does the full body round trip
    (miltertest cannot drive it: it stops at milters that skip protocol steps)."""
    spec = importlib.util.spec_from_file_location("passthrough", BENCH / "passthrough_milter.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    floor = module.PassthroughMilter()
    floor._ctx = mta = Recorder()
    floor._actions, floor._protocol = Milter.CHGBODY, 0
    body = bytes(range(256)) * 600  # 150 KiB: more than one libmilter chunk each way
    for start in range(0, len(body), 65535):
        floor.body(body[start : start + 65535])
    assert floor.eom() == Milter.ACCEPT
    chunks = [call[1] for call in mta.calls if call[0] == "replacebody"]
    assert b"".join(chunks) == body and max(map(len, chunks)) <= 65536
