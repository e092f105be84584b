"""The harness that runs ``smtpapi-milter`` subcommands as real processes (harness/smtpapi.py)."""

from __future__ import annotations

import tomllib

from .harness.smtpapi import RunningTracker


def test_services_made_from_one_dict_get_ports_of_their_own(tmp_path):
    # Regression: the tracker's sections were the caller's own dicts, and the ports the first
    # tracker chose were in them, so a second tracker made from the same dict listened on
    # the same ports and failed to start (bench/tracker_flush_cost.py runs two).
    settings = {"flood_window": 0.001}
    made = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        tracker = RunningTracker(tmp_path / name, engagement_tracker=settings)
        made.append(tomllib.loads(tracker.config_path.read_text())["engagement_tracker"])
    assert settings == {"flood_window": 0.001}
    assert made[0]["listen"] != made[1]["listen"]
    assert made[0]["admin_listen"] != made[1]["admin_listen"]
    assert made[0]["flood_window"] == made[1]["flood_window"] == 0.001


def test_a_service_imports_from_its_python_path_first(tmp_path):
    # A benchmark changes the service's processes with a sitecustomize.py of its own.
    hook = tmp_path / "site"
    hook.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import os\nopen(os.path.join({str(marks)!r}, str(os.getpid())), 'w').close()\n"
    )
    (tmp_path / "tracker").mkdir()
    tracker = RunningTracker(tmp_path / "tracker")
    tracker.python_path = (hook,)
    with tracker as running:
        assert running.process is not None
        assert (marks / str(running.process.pid)).exists()
