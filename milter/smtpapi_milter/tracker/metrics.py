"""Prometheus metrics of the tracker process (``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REQUESTS = Counter(
    "smtpapi_tracker_requests",
    "Tracking requests by kind (click, open, initial_open) and outcome "
    "(stored, expired, head, invalid, unavailable)",
    ["kind", "outcome"],
)
LATENCY = Histogram(
    "smtpapi_tracker_response_seconds",
    "Time from request to response for tracking requests, durable event commit included",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


_counters: dict[tuple[str, str], Counter] = {}
_latencies: dict[str, Histogram] = {}


def request(kind: str, outcome: str, seconds: float | None = None) -> None:
    """Count one tracking request (and its latency): label lookups cached, it is hot."""
    counter = _counters.get((kind, outcome))
    if counter is None:
        counter = _counters[kind, outcome] = REQUESTS.labels(kind, outcome)
    counter.inc()
    if seconds is not None:
        latency = _latencies.get(kind)
        if latency is None:
            latency = _latencies[kind] = LATENCY.labels(kind)
        latency.observe(seconds)


def exposition() -> tuple[bytes, bytes]:
    """The metrics page and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode("ascii")


class _WebhookCollector:
    """Reads the dispatcher's own counters at scrape time (no double bookkeeping)."""

    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Any]:
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
    REGISTRY.register(_WebhookCollector(dispatcher))
