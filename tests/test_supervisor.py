"""The milter's supervisor process (mta/service.py), driven by signals as systemd drives it."""

from __future__ import annotations

import os
import signal

from .harness.smtpapi import RunningMilter


def test_sigterm_while_a_crashed_worker_awaits_restart_stops_at_once(tmp_path):
    # Regression: SIGTERM during the restart delay used to start a new worker and then wait
    # on it forever (systemd would SIGKILL the service after TimeoutStopSec).
    with RunningMilter(tmp_path) as milter:
        (started,) = milter.wait_for_log("milter starting")
        os.kill(started["pid"], signal.SIGKILL)
        milter.wait_for_log("milter worker exited, restarting")
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(timeout=10) == 0
        assert len(milter.wait_for_log("milter starting")) == 1  # no new worker
