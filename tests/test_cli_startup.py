"""`rewrite` starts without what only other commands use (SPEC 11: start-up is in the bar)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import corpus

ROOT = Path(__file__).resolve().parents[1]
# Modules only the servers and the event-store commands need.
NOT_FOR_REWRITE = (
    "smtpapi_milter.preflight",
    "smtpapi_milter.events.store",
    "smtpapi_milter.events.stats",
    "ctypes",
    "jsonschema",  # a valid X-MSYS-API passes the plain check (xmsysapi.plainly_valid)
)
PROBE = """
import json, sys
from smtpapi_milter import cli
status = cli.main(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def test_rewrite_imports_neither_event_store_nor_preflight(tmp_path):
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path}"\n')
    message = tmp_path / "m.eml"
    message.write_bytes(corpus.wrap_html(b'<a href="https://example.com/">x</a>', "8bit"))
    args = ["rewrite", "--config", str(config), "--out-dir", str(tmp_path / "out"), str(message)]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = json.loads(result.stderr.decode().splitlines()[-1])
    assert report["status"] == 0
    assert (tmp_path / "out" / "m.eml").read_bytes().count(b"/c/") == 1
    loaded = set(report["modules"]) & set(NOT_FOR_REWRITE)
    assert not loaded
