"""Prometheus metrics of the tracker, served on the admin listener's ``/metrics``.

The public listener may run several worker processes (``[engagement_tracker] workers``), and
its counts must stay exact whichever worker counted them (the benchmark and the fault tests
compare them with the events stored). So, as the milter does (``mta/metrics.py``), every
public worker counts into its own files in a directory named by ``PROMETHEUS_MULTIPROC_DIR``.
The public listener serves no ``/metrics`` (readers reach it; counts of clicks are nobody's
business there): the admin listener, a process of its own, is told the same directory in
``SMTPAPI_TRACKER_METRICS_DIR`` and adds the sum of the workers' files to its own metrics
(webhook delivery). prometheus_client picks where values live when it is first imported,
which is why nothing here imports it at module level. Without the variables (tests that
build the apps in-process) counts live in the process as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

# Where the public workers' counter files are, for the admin listener to read.
TRACKER_METRICS_ENV = "SMTPAPI_TRACKER_METRICS_DIR"

KINDS = ("click", "open", "initial_open", "unsubscribe")
# "folded": a repeat the flood guard counted instead of storing (tracker/flood.py); "page":
# the unsubscribe confirmation page was shown (GET /u/, which records nothing).
OUTCOMES = ("stored", "folded", "expired", "head", "invalid", "unavailable", "page")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Label children by (kind, outcome) and by kind: the lookups are on every request's path.
_counters: dict[tuple[str, str], Any] = {}
_latencies: dict[str, Any] = {}


def _create() -> None:
    from prometheus_client import Counter, Histogram

    requests = Counter(
        "smtpapi_tracker_requests",
        "Tracking requests by kind (click, open, initial_open, unsubscribe) and outcome "
        "(stored, folded, expired, head, invalid, unavailable, page)",
        ["kind", "outcome"],
    )
    latency = Histogram(
        "smtpapi_tracker_response_seconds",
        "Time from request to response for tracking requests, durable journal flush included",
        ["kind"],
        buckets=LATENCY_BUCKETS,
    )
    # Every series exists from the start at 0 (also in the multiprocess files, which only
    # show series that were created), and no request pays for creating one.
    for kind in KINDS:
        _latencies[kind] = latency.labels(kind)
        for outcome in OUTCOMES:
            _counters[kind, outcome] = requests.labels(kind, outcome)


def prepare() -> None:
    """Create every series at 0 now, so a scrape shows them before the first request."""
    if not _counters:
        _create()


def request(kind: str, outcome: str, seconds: float | None = None) -> None:
    """Count one tracking request (and its latency)."""
    if not _counters:
        _create()
    _counters[kind, outcome].inc()
    if seconds is not None:
        _latencies[kind].observe(seconds)


def exposition() -> tuple[bytes, bytes]:
    """The admin listener's metrics page and its content type: this process's metrics, plus
    the public workers' request counts summed over their files when the directory is known."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    page = generate_latest(REGISTRY)
    directory = os.environ.get(TRACKER_METRICS_ENV)
    if directory and os.path.isdir(directory):
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=directory)
        # Distinct metric families, so the two texts join into one valid page.
        page += generate_latest(workers)
    return page, CONTENT_TYPE_LATEST.encode("ascii")


class _WebhookCollector:
    """Reads the dispatcher's own counters at scrape time (no double bookkeeping)."""

    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = {
            "batches_delivered": "Batches a webhook endpoint accepted (2xx)",
            "batches_failed": "Failed webhook POST attempts (retried)",
            "batches_given_up": "Batches given up after the retry window",
            "events_delivered": "Events delivered to a webhook endpoint",
            "events_given_up": "Events given up after the retry window",
        }
        stats = self.dispatcher.stats()
        for field, text in counters.items():
            family = CounterMetricFamily(f"smtpapi_webhook_{field}", text, labels=["endpoint"])
            for label, endpoint in stats.items():
                family.add_metric([label], getattr(endpoint, field))
            yield family
        lease = GaugeMetricFamily(
            "smtpapi_webhook_holds_lease",
            "1 if this node delivers the endpoint",
            labels=["endpoint"],
        )
        for label, endpoint in stats.items():
            lease.add_metric([label], 1 if endpoint.holds_lease else 0)
        yield lease


def watch_webhooks(dispatcher: Any) -> None:
    """Export ``dispatcher``'s counters on this process's /metrics."""
    from prometheus_client import REGISTRY

    REGISTRY.register(_WebhookCollector(dispatcher))
