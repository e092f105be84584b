"""Prometheus metrics of the tracker (``/metrics``).

The public listener may run several worker processes (``[engagement_tracker] workers``), and
its counts must stay exact whichever worker answers a scrape (the benchmark and the fault
tests compare them with the events stored). So, as the milter does (``mta/metrics.py``), the
listener hands its workers a private directory in ``PROMETHEUS_MULTIPROC_DIR`` and every
worker counts into its own files there; a scrape sums them. prometheus_client picks where
values live when it is first imported, which is why nothing here imports it at module level.
Without the variable (the admin listener, tests that build the app in-process) counts live
in the process as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..multiproc import MULTIPROC_ENV

KINDS = ("click", "open", "initial_open")
OUTCOMES = ("stored", "expired", "head", "invalid", "unavailable")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Label children by (kind, outcome) and by kind: the lookups are on every request's path.
_counters: dict[tuple[str, str], Any] = {}
_latencies: dict[str, Any] = {}


def _create() -> None:
    from prometheus_client import Counter, Histogram

    requests = Counter(
        "smtpapi_tracker_requests",
        "Tracking requests by kind (click, open, initial_open) and outcome "
        "(stored, expired, head, invalid, unavailable)",
        ["kind", "outcome"],
    )
    latency = Histogram(
        "smtpapi_tracker_response_seconds",
        "Time from request to response for tracking requests, durable event commit included",
        ["kind"],
        buckets=LATENCY_BUCKETS,
    )
    # Every series exists from the start at 0 (also in the multiprocess files, which only
    # show series that were created), and no request pays for creating one.
    for kind in KINDS:
        _latencies[kind] = latency.labels(kind)
        for outcome in OUTCOMES:
            _counters[kind, outcome] = requests.labels(kind, outcome)


def request(kind: str, outcome: str, seconds: float | None = None) -> None:
    """Count one tracking request (and its latency)."""
    if not _counters:
        _create()
    _counters[kind, outcome].inc()
    if seconds is not None:
        _latencies[kind].observe(seconds)


def exposition() -> tuple[bytes, bytes]:
    """The metrics page and its content type (the sum over the workers, if several)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    if not _counters:
        _create()
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode("ascii")
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST.encode("ascii")


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
