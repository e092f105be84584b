"""When a supervisor stops restarting a child: systemd's start limit, for our supervisors.

A child that cannot start (its port taken, its socket's directory missing) fails the same
way however often it is restarted; restarting it forever fills the log and hides the
failure from systemd, which sees a supervisor that is running. So, like systemd's
StartLimitBurst, a child that exited ``burst`` times in a row with the same status, each
time within ``up_seconds`` of being started, is not started again: the supervisor says so,
stops the others and exits with ``EXIT_START_LIMIT``. A child that ran longer was up: its
exit is a crash, restarted as before, and the count starts again.

Supervisors nest (``run`` starts ``tracker`` and ``milter``, each a supervisor of its own):
a child exiting with ``EXIT_START_LIMIT`` has already applied the limit below, so it is
not restarted either, and the failure climbs to systemd at once.
"""

from __future__ import annotations

EXIT_START_LIMIT = 6
START_LIMIT_BURST = 3
UP_SECONDS = 10.0  # a child that exits sooner failed to start


class StartLimit:
    """One child's recent failed starts."""

    def __init__(self, burst: int = START_LIMIT_BURST, up_seconds: float = UP_SECONDS):
        self.burst = burst
        self.up_seconds = up_seconds
        self.failed: list[int] = []  # exit statuses of the failed starts in a row

    def exhausted(self, code: int, ran: float) -> bool:
        """Record an exit (status ``code`` after ``ran`` seconds); True: do not restart."""
        if code == EXIT_START_LIMIT:
            return True
        if ran >= self.up_seconds or (self.failed and self.failed[-1] != code):
            self.failed = []
        if ran < self.up_seconds:
            self.failed.append(code)
        return len(self.failed) >= self.burst
