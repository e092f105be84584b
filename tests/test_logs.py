"""Log lines stay whole when several processes share one stdout (milter workers do)."""

from __future__ import annotations

import json
import subprocess
import sys

WRITER = """
import logging, sys
import structlog
from smtpapi_milter import logs
logs.configure(stream=sys.stdout, level=logging.INFO, json=True)
log = structlog.get_logger("t")
for n in range(3000):
    log.info("message", writer=sys.argv[1], n=n, pad="x" * 200)
"""


def test_concurrent_writers_never_merge_lines(tmp_path):
    out = tmp_path / "shared.log"
    with out.open("ab") as shared:  # O_APPEND, as a service manager or the harness opens it
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(w)], stdout=shared)
            for w in range(3)
        ]
        assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    lines = out.read_text().splitlines()
    assert len(lines) == 9000
    assert {json.loads(line)["writer"] for line in lines} == {"0", "1", "2"}
