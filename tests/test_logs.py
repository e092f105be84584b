"""Log lines stay whole when several processes share one stdout (milter workers do)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

import structlog
import structlog.testing

from smtpapi_milter import logs

WRITER = """
import logging, sys
import structlog
import structlog.testing
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


def test_a_json_line_has_the_event_its_level_and_a_utc_microsecond_time_stamp():
    stream = io.StringIO()
    saved = structlog.get_config()
    logs.configure(stream=stream, level=logging.INFO, json=True)
    try:
        log = structlog.get_logger("t")
        before = time.time()
        log.info("message", queue_id="4Xq", links=55, tracked=True, untracked=None, ms=2.5)
        log.warning("big", metadata_id=2**70, thing=object(), text="é\n\x1e")
        after = time.time()
    finally:
        structlog.configure(**saved)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("event", "level", "queue_id", "links", "tracked")} == {
        "event": "message",
        "level": "info",
        "queue_id": "4Xq",
        "links": 55,
        "tracked": True,
    }
    assert first["untracked"] is None and first["ms"] == 2.5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["timestamp"])
    stamped = datetime.strptime(first["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    stamped = stamped.replace(tzinfo=UTC).timestamp()
    assert before - 1e-6 <= stamped <= after
    # Beyond orjson's 64 bits: written by the standard library instead, never dropped.
    assert second["metadata_id"] == 2**70 and second["level"] == "warning"
    assert second["thing"].startswith("<object object at ") and second["text"] == "é\n\x1e"


def test_the_time_stamp_follows_the_clock_across_seconds(monkeypatch):
    for now, text in [
        (1_765_000_000.25, "2025-12-06T05:46:40.250000Z"),
        (1_765_000_000.999999, "2025-12-06T05:46:40.999999Z"),
        (1_765_000_001.0, "2025-12-06T05:46:41.000000Z"),
        (1_765_000_000.5, "2025-12-06T05:46:40.500000Z"),  # a clock set back
    ]:
        monkeypatch.setattr(logs.time, "time", lambda now=now: now)
        assert logs.add_timestamp(None, "info", {})["timestamp"] == text


def test_a_hot_logger_follows_each_new_configuration():
    saved = structlog.get_config()
    first, second = io.StringIO(), io.StringIO()
    hot = logs.HotLogger("t")
    try:
        logs.configure(stream=first, level=logging.INFO, json=True)
        hot.get().info("one")
        bound = hot.get()
        assert hot.get() is bound  # kept while the configuration holds
        with structlog.testing.capture_logs() as captured:
            hot.get().info("captured")
        hot.get().info("two")  # capture_logs put the processors back: bound again
        logs.configure(stream=second, level=logging.INFO, json=True)
        hot.get().info("three")
        logs.configure(stream=second, level=logging.WARNING, json=True)
        hot.get().info("filtered out")
    finally:
        structlog.configure(**saved)
    assert [json.loads(line)["event"] for line in first.getvalue().splitlines()] == ["one", "two"]
    assert [line["event"] for line in captured] == ["captured"]
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == ["three"]
