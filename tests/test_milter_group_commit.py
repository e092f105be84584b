"""Sessions ending together share one commit of their injection events (issue 20).

The rewrite slots (``[milter] max_concurrent_rewrites``) bound the memory of rewrites; a
session used to hold its slot while it waited for its events to be flushed, so no more
sessions than slots could ever wait on one commit, and with one slot every message paid
its own flush. Now the slot is given back once the MTA has the changes, and the sessions
that wait together are committed together, each still answered only after its own events
are durable.

The adapter runs against a recorder in place of libmilter's context (as in
test_milter_errors.py); configuration, pipeline and the SQLite store are real.
"""

from __future__ import annotations

import threading
import time

import Milter

from smtpapi_milter.mta.milter import ACTIONS, SmtpapiMilter
from smtpapi_milter.mta.state import MilterState

from .harness.smtpapi import toml
from .test_milter_errors import TRACK, Recorder

SESSIONS = 8
BODY = b'<html><body><a href="https://example.com/x">x</a></body></html>\r\n'


def load(tmp_path) -> MilterState:
    config = tmp_path / "smtpapi-milter.toml"
    sections = {
        "milter": {"max_concurrent_rewrites": 1},
        "policy": {"directory": str(tmp_path / "none")},
    }
    config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    return MilterState.load(str(config))


def ready_session(
    state: MilterState, n: int, fields: tuple[tuple[str, bytes], ...] = ()
) -> tuple[SmtpapiMilter, Recorder]:
    """Reader ``n``'s session, its tracked message sent up to the end of message; ``fields``:
    header fields besides X-MSYS-API and Content-Type."""
    milter = SmtpapiMilter(state)
    milter._ctx = recorder = Recorder()
    milter._actions, milter._protocol = ACTIONS, 0
    milter.connect("client.example", 2, ("127.0.0.1", 40000 + n))
    milter.hello("client.example")
    milter.envfrom("<news@example.com>")
    milter.envrcpt(f"<reader{n}@example.org>")
    for name, value in (("X-MSYS-API", TRACK), *fields):
        milter.header(name, value)
    milter.header("Content-Type", b" text/html; charset=utf-8")
    milter.eoh()
    milter.body(BODY)
    return milter, recorder


def session(state: MilterState, n: int, start: threading.Barrier, out: list) -> None:
    milter, recorder = ready_session(state, n)
    start.wait()
    verdict = milter.eom()
    out.append((n, verdict, recorder.calls, time.monotonic()))
    milter.close()


def test_sessions_ending_together_share_a_commit_and_reply_after_it(tmp_path):
    state = load(tmp_path)
    try:
        store = state._store.get()  # the worker's open store
        group = store._group
        commit = group._commit
        commits: list[tuple[float, set[str]]] = []

        def slow_commit(rows, floods):
            # A flush that takes a while (a busy disk): the other sessions end meanwhile.
            time.sleep(0.3)
            commit(rows, floods)
            commits.append((time.monotonic(), {row[3] for row in rows}))  # transmission ids

        group._commit = slow_commit
        start, out = threading.Barrier(SESSIONS), []
        threads = [
            threading.Thread(target=session, args=(state, n, start, out)) for n in range(SESSIONS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(out) == SESSIONS
        assert all(verdict == Milter.ACCEPT for _, verdict, _, _ in out)
        # One slot, eight sessions: the first commits alone, the rest wait on it together.
        assert len(commits) <= 3, [len(ids) for _, ids in commits]
        stored = store.query(types=["injection"])
        assert len(stored) == SESSIONS
        for n, _, calls, replied in out:
            (event,) = [e for e in stored if e["rcpt_to"] == f"reader{n}@example.org"]
            committed = min(at for at, ids in commits if event["transmission_id"] in ids)
            assert committed <= replied  # durable before the end-of-message reply
            assert ("chgheader", "X-MSYS-API", 1, None) in calls
            assert any(call[0] == "replacebody" for call in calls)
    finally:
        state.close()
