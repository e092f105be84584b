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

Counting a request into prometheus_client cost 3 us in a worker (a counter's and a
histogram's values, each under a lock, written into the process's file; timeit under uvloop),
~2 % of the live tracker's CPU per click; now 0.4 us. So ``request`` adds to plain numbers
of its thread, and those are added to the prometheus
values in one go ``FOLD_SECONDS`` after the first of them (a timer of the thread's event loop;
at once when there is none), and when the process exits. A scrape sees every answered request
at most ``FOLD_SECONDS`` after its answer; the counts are exact as before, only later.
"""

from __future__ import annotations

import asyncio
import os
import threading
from bisect import bisect_left
from collections.abc import Iterator
from multiprocessing import util as multiprocessing_util
from typing import Any

# Where the public workers' counter files are, for the admin listener to read.
TRACKER_METRICS_ENV = "SMTPAPI_TRACKER_METRICS_DIR"

KINDS = ("click", "open", "initial_open", "unsubscribe")
# "folded": a repeat the flood guard counted instead of storing (tracker/flood.py); "page":
# the unsubscribe confirmation page was shown (GET /u/, which records nothing).
OUTCOMES = ("stored", "folded", "expired", "head", "invalid", "unavailable", "page")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# How long a request's count may stay out of the prometheus values (see above).
FOLD_SECONDS = 0.1

# Label children by (kind, outcome) and by kind.
_counters: dict[tuple[str, str], Any] = {}
_latencies: dict[str, Any] = {}


class _Pending:
    """One thread's counts not yet added to the prometheus values."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_counters, 0)
        # Per kind: observations per bucket (prometheus's: the first bound >= the value; the
        # last one +Inf), and their sum.
        self.buckets = {kind: [0] * (len(LATENCY_BUCKETS) + 1) for kind in KINDS}
        self.sums = dict.fromkeys(KINDS, 0.0)
        # The event loop a fold is due on (None: none is). One closed before its timer came
        # (asyncio.run in tests) never folds: the next request schedules one on its own loop.
        self.fold_on: asyncio.AbstractEventLoop | None = None

    def fold(self) -> None:
        """Add the counts to the prometheus values and start again from zero."""
        self.fold_on = None
        counts = self.counts
        for key, count in counts.items():
            if count:
                counts[key] = 0
                _counters[key].inc(count)
        for kind, buckets in self.buckets.items():
            if not any(buckets):
                continue
            histogram = _latencies[kind]
            # Histogram.observe adds to ``_sum`` and to one of ``_buckets`` (each bucket's own
            # count; the exposition accumulates them): the same, once per bucket and fold.
            # tests/test_tracker_metrics.py holds the pages equal to observe's.
            histogram._sum.inc(self.sums[kind])
            self.sums[kind] = 0.0
            for index, count in enumerate(buckets):
                if count:
                    buckets[index] = 0
                    histogram._buckets[index].inc(count)


_local = threading.local()
_every_pending: list[_Pending] = []  # each thread's, to fold when the process exits
_every_pending_lock = threading.Lock()


def _fold_all() -> None:
    with _every_pending_lock:
        for pending in _every_pending:
            pending.fold()


def _pending() -> _Pending:
    pending = _local.__dict__.get("pending")
    if pending is None:
        if not _counters:
            _create()
        pending = _local.pending = _Pending()
        with _every_pending_lock:
            _every_pending.append(pending)
    return pending


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
    # Counts of the last FOLD_SECONDS before the process ends: a Granian worker is a forked
    # multiprocessing child, which ends without atexit but runs multiprocessing's finalizers
    # (at exit of a process of its own too).
    multiprocessing_util.Finalize(None, _fold_all, exitpriority=0)


def prepare() -> None:
    """Create every series at 0 now, so a scrape shows them before the first request."""
    if not _counters:
        _create()


def request(kind: str, outcome: str, seconds: float | None = None) -> None:
    """Count one tracking request (and its latency): on /metrics within FOLD_SECONDS."""
    pending = _local.__dict__.get("pending") or _pending()
    pending.counts[kind, outcome] += 1
    if seconds is not None:
        pending.buckets[kind][bisect_left(LATENCY_BUCKETS, seconds)] += 1
        pending.sums[kind] += seconds
    if pending.fold_on is None or pending.fold_on.is_closed():
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to come back: now
            pending.fold()
            return
        loop.call_later(FOLD_SECONDS, pending.fold)
        pending.fold_on = loop


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
