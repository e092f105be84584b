"""Signals acted on by a thread of their own, never inside a Python signal handler.

Two reasons, each met in our daemons:

* Python runs a handler in the main thread between two bytecodes, and so also inside
  ``threading.Event.wait()`` while that holds the event's own lock, which is not reentrant.
  A handler that calls ``event.set()`` then waits for that lock forever, and the process
  never stops: a loop of ``event.wait(0)`` hung on 173 of 300 SIGTERMs so handled. The
  journal indexer and the log follower sleep in ``stopping.wait(...)``.
* The milter worker's main thread stays in libmilter's C loop, where a Python handler
  would never run at all.

So the C-level handler writes the signal's number to a pipe (Python's wakeup fd), and a
thread reads it and makes the call; that thread never holds a lock the main thread waits
for. The wakeup fd is one per process: call :func:`act_on_signals` once, from the main thread.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Collection, Mapping

# An action returns True when it was the last one: the thread ends, later signals do nothing.
Action = Callable[[], bool | None]


def act_on_signals(
    actions: Mapping[int, Action],
    *,
    name: str = "signals",
    block: Collection[int] = (),
    pending: Collection[int] = (),
) -> None:
    """From now on, each signal of ``actions`` makes a thread called ``name`` call its
    action (several of one kind that come together, once). ``block``: signals that thread
    must never take (another thread waits for them); ``pending``: signals that came before
    this call, acted on first."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)
    # First: a signal from here on reaches the pipe (one that also came before, twice).
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in actions:
        signal.signal(signum, lambda *_: None)
    if pending:
        os.write(write_fd, bytes(sorted(pending)))

    def wait_and_act() -> None:
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, block)
        while True:
            for signum in dict.fromkeys(os.read(read_fd, 64)):
                action = actions.get(signum)
                if action is not None and action():
                    return

    threading.Thread(target=wait_and_act, name=name, daemon=True).start()


def call_on_stop_signals(stop: Callable[[], object]) -> None:
    """From now on, SIGTERM or SIGINT calls ``stop()`` in a thread named ``stop-signal``;
    once, however many come."""

    def last() -> bool:
        stop()
        return True

    act_on_signals({signal.SIGTERM: last, signal.SIGINT: last}, name="stop-signal")
