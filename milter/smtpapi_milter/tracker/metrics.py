"""Prometheus metrics of the tracker process (``/metrics``)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

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
