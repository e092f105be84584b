"""A data-phase policy that waits does not hold up other messages' end of message.

The rewrite slots (``[milter] max_concurrent_rewrites``, one by default) bound how many
bodies are loaded and rewritten at once. ``validate_data_spool`` policies need no body but may
wait on anything a site asks of them (a lookup over the network, up to ``[policy] timeout``):
they run before the slot is taken, so with one slot a message whose policy waits lets the
others through meanwhile. Before, the policy ran inside the slot and every other message of
the worker waited for it.

The adapter runs against a recorder in place of libmilter's context (as in
test_milter_group_commit.py); configuration, policies, pipeline and the SQLite store are real.
"""

from __future__ import annotations

import os
import threading

import Milter

from smtpapi_milter.mta.state import MilterState

from .harness.smtpapi import toml
from .test_milter_group_commit import ready_session

# Waits, for the message whose Subject is "hold", until the test writes to the FIFO and
# closes it (opening a FIFO to read blocks until a writer opens it: no polling).
HOLDING_POLICY = """
def validate_data_spool(ctx):
    if ctx.header("Subject") == "hold":
        with open({fifo!r}, "rb") as gate:
            gate.read()
"""


def load(tmp_path, fifo) -> MilterState:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "hold.py").write_text(HOLDING_POLICY.format(fifo=str(fifo)))
    config = tmp_path / "smtpapi-milter.toml"
    sections = {"milter": {"max_concurrent_rewrites": 1}, "policy": {"directory": str(policies)}}
    config.write_text(toml(sections, {"state_dir": str(tmp_path / "state")}))
    return MilterState.load(str(config))


def session(state: MilterState, n: int, subject: bytes, out: dict) -> None:
    milter, _ = ready_session(state, n, (("Subject", subject),))
    out[n] = milter.eom()
    milter.close()


def test_a_waiting_data_policy_holds_no_rewrite_slot(tmp_path):
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    state = load(tmp_path, fifo)
    out: dict[int, int] = {}
    held = threading.Thread(target=session, args=(state, 0, b"hold", out))
    try:
        held.start()
        # Returns once the policy has opened the FIFO: the first message waits in it now.
        gate = open(fifo, "wb")  # noqa: SIM115 (closed below, to let the policy go on)
        try:
            other = threading.Thread(target=session, args=(state, 1, b"news", out))
            other.start()
            other.join(timeout=20)
            assert not other.is_alive(), "the second message waited for the first's policy"
            assert out == {1: Milter.ACCEPT}
        finally:
            gate.close()
        held.join(timeout=20)
        assert out == {0: Milter.ACCEPT, 1: Milter.ACCEPT}
    finally:
        state.close()
