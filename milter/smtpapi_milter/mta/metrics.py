"""The milter's Prometheus metrics on ``[milter] metrics_listen`` (SPEC 9).

Several libmilter worker processes (``[milter] workers``) share one socket, so each counts
into prometheus_client's multiprocess files in a private directory and the leader serves the
sum: ``/metrics`` (Prometheus text) and ``/healthz``. Failing to bind the port is logged and
the milter runs on: metrics must never stop mail.
"""

from __future__ import annotations

import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from ..multiproc import MULTIPROC_ENV, counter_directory

log = structlog.get_logger("smtpapi_milter.milter")


class MilterMetrics:
    """Counters of one milter process group. Create it before the workers fork."""

    def __init__(self) -> None:
        # prometheus_client picks its storage when first imported: the directory must be set
        # before that, which is why nothing imports it at module level.
        self.directory = counter_directory("smtpapi-milter-metrics-")
        os.environ[MULTIPROC_ENV] = self.directory
        from prometheus_client import Counter, Histogram

        self._messages = Counter(
            "smtpapi_milter_messages",
            "Messages by verdict: tracked, untracked (accepted as they came), rejected "
            "(5xx), tempfailed (4xx)",
            ["verdict"],
        )
        self._links = Counter("smtpapi_milter_links_tracked", "Links turned into tracked links")
        self._analyses = Counter(
            "smtpapi_milter_body_analyses",
            "Bodies of tracked messages analysed anew (new) or found analysed in the worker's "
            "[milter] analysis_cache (reused)",
            ["result"],
        )
        self._seconds = Histogram(
            "smtpapi_milter_message_seconds",
            "From MAIL FROM to the end-of-message reply",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        self._server: ThreadingHTTPServer | None = None
        # Each label value's counter, kept once made: labels() checks, converts and locks
        # for every call (two a message: 6.9 -> 5.1 us for counting one, hot).
        self._verdicts: dict[str, Any] = {}
        self._analysed: dict[str, Any] = {}

    def message(
        self, verdict: str, seconds: float, links: int = 0, analysis: str | None = None
    ) -> None:
        """Count one message's outcome (``analysis``: "new", "reused" or None, not needed)."""
        counter = self._verdicts.get(verdict)
        if counter is None:
            counter = self._verdicts.setdefault(verdict, self._messages.labels(verdict))
        counter.inc()
        self._seconds.observe(seconds)
        if links:
            self._links.inc(links)
        if analysis is not None:
            counter = self._analysed.get(analysis)
            if counter is None:
                counter = self._analysed.setdefault(analysis, self._analyses.labels(analysis))
            counter.inc()

    def serve(self, listen: str) -> None:
        """Serve the group's sum on ``host:port`` from a thread (the leader calls this)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        host, _, port = listen.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    body, kind = b"ok\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not worth a log line
                pass

        try:
            self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        except OSError as exc:
            log.error("milter metrics not served", listen=listen, error=str(exc))
            return
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    def close(self) -> None:
        """Stop serving and remove the counters' files (the leader, at exit)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
