"""No orphans: every process we start dies with the process that started it.

A supervisor killed with SIGKILL (an OOM killer, an operator, systemd after TimeoutStopSec)
cannot stop its children. Left running they keep serving the ports, beside the instance
that is started again. Linux's ``PR_SET_PDEATHSIG`` has the kernel signal a process when
the thread that forked it ends. It is set by the child itself, so the parent may already be
gone when it does: the child then compares its parent with the one that started it.

A child learns that pid from the environment (``child_environment`` sets it for a command
we start, ``die_with_parent`` reads it once the child runs our code), or is given it when
it is a fork of ours. Every supervisor of the project does this: ``supervise.Supervisor``
(``tracker``, ``run``), the milter's (``mta/service.py``), the milter's worker group and
the tracker's Granian worker processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

PARENT_ENV = "SMTPAPI_MILTER_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ours) telling a child we start to die with this process."""
    base = os.environ if environ is None else environ
    return {**base, PARENT_ENV: str(os.getpid())}


def mark_children() -> None:
    """Children forked from now on (Granian's workers) die with this process."""
    os.environ[PARENT_ENV] = str(os.getpid())


def die_with_parent(parent: int | None = None, signum: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signum`` when ``parent`` ends (or exit now if it has).

    ``parent`` defaults to the pid our starter put in the environment; without one this
    process was started by hand (or by systemd) and has no parent to follow. SIGKILL by
    default: a child whose supervisor vanished must free its port at once, and everything
    it writes survives a kill (the fault tests SIGKILL the tracker under load).
    """
    if parent is None:
        value = os.environ.pop(PARENT_ENV, "")
        if not value.isdigit():
            return
        parent = int(value)
    import ctypes  # only a process we started pays for it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(1)  # no parent-death signal on this system, or the parent is already gone
