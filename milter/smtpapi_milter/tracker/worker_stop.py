"""A stop that a Granian worker process would lose: SIGTERM before its event loop runs.

Granian (2.8.9) forks each worker from its server process. A worker stops when its event
loop handles SIGTERM, and there are two stretches of its start in which a SIGTERM is lost:

1. From the fork until the worker puts in the loop's handler: the handler is the one
   inherited from the server, a method that marks the server object (``interrupt_signal``),
   in the worker the server's copy, which nothing there reads.
2. From then until the loop runs: uvloop learns of signals through a wake-up descriptor it
   sets only while it runs; its Python-level handler does nothing.

The worker then serves on, and its server, stopping, waits for it. Granian's server sends
such a SIGTERM when it is told to stop while it starts workers (after a SIGHUP, or while it
replaces one that died). Seen while stopping the tracker right after a SIGHUP (py-spy: the
server joining a worker that served on; supervise.py has the other ways that stop was lost):
with the first stretch handled and not the second, Granian still killed such a worker in 1
of 14 tries; with both, none in 54.

So the public listener keeps its Granian server here (:func:`remember`, before it forks the
workers), each worker takes SIGTERM and SIGINT itself from the moment it is called
(:func:`hold`, in ``__rsgi_init__``, where the loop's handler is in but the loop does not
run) and, once the loop runs, gives them back and sends itself the stop it missed in either
stretch (:func:`resend_lost_stop`). The admin listener (one ASGI worker) has no hook
before its loop runs: its lifespan startup sends the stop the first stretch took, and for
the second, as for anything else that keeps a worker from stopping, Granian's
``workers_kill_timeout`` ends the worker (tracker/server.py).
"""

from __future__ import annotations

import signal
from typing import Any

_STOPS = (signal.SIGTERM, signal.SIGINT)
# The listener's Granian server: in a worker process, the copy its fork inherited.
_server: Any = None
# While held: the handlers put aside (the loop's), and whether a stop came meanwhile.
_held: dict[int, Any] = {}
_stop_came = False


def remember(server: Any) -> None:
    """Keep ``server`` (a granian.server.Server) for the workers it will fork."""
    global _server
    _server = server


def hold() -> None:
    """Take SIGTERM and SIGINT until :func:`resend_lost_stop` (call before the loop runs)."""
    for signum in _STOPS:
        _held[signum] = signal.signal(signum, _note_stop)


def _note_stop(signum: int, frame: object) -> None:
    global _stop_came
    _stop_came = True


def resend_lost_stop() -> bool:
    """Once the loop runs: give the loop its handlers back and, if a stop came before it
    could take one, send SIGTERM again (True then). Does nothing outside a Granian worker."""
    global _stop_came
    for signum, handler in _held.items():
        signal.signal(signum, handler)
    _held.clear()
    lost = _stop_came or bool(getattr(_server, "interrupt_signal", False))
    _stop_came = False
    if _server is not None:
        _server.interrupt_signal = False
    if lost:
        signal.raise_signal(signal.SIGTERM)
    return lost
