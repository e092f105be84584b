"""The tracker's request counts (tracker/metrics.py): counted per request into plain numbers,
added to the prometheus values within FOLD_SECONDS, equal to what observe would have made."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from smtpapi_milter.tracker import metrics

from .harness.smtpapi import ROOT

LATENCIES = [0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.01, 0.02, 0.3, 1.0, 7.5]


def bucket_bounds() -> list[str]:
    return [repr(bound) for bound in metrics.LATENCY_BUCKETS] + ["+Inf"]


def page(kind: str) -> dict[str, float]:
    """The /metrics values of ``kind``: stored clicks, each latency bucket, count and sum."""
    name = "smtpapi_tracker_response_seconds"
    values = {
        "stored": REGISTRY.get_sample_value(
            "smtpapi_tracker_requests_total", {"kind": kind, "outcome": "stored"}
        ),
        "count": REGISTRY.get_sample_value(name + "_count", {"kind": kind}),
        "sum": REGISTRY.get_sample_value(name + "_sum", {"kind": kind}),
    }
    for le in bucket_bounds():
        values[le] = REGISTRY.get_sample_value(name + "_bucket", {"kind": kind, "le": le})
    return values


def added(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 9) for key in after}


def observed(latencies: list[float]) -> dict[str, float]:
    """What prometheus_client's own Histogram.observe makes of ``latencies``."""
    registry = CollectorRegistry()
    reference = Histogram("ref", "", buckets=metrics.LATENCY_BUCKETS, registry=registry)
    for seconds in latencies:
        reference.observe(seconds)
    values = {
        "stored": float(len(latencies)),
        "count": registry.get_sample_value("ref_count"),
        "sum": round(registry.get_sample_value("ref_sum"), 9),
    }
    for le in bucket_bounds():
        values[le] = registry.get_sample_value("ref_bucket", {"le": le})
    return values


def test_counts_in_an_event_loop_reach_the_metrics_within_the_fold_delay():
    metrics.prepare()
    before = page("open")

    async def requests() -> dict[str, float]:
        for seconds in LATENCIES:
            metrics.request("open", "stored", seconds)
        await asyncio.sleep(metrics.FOLD_SECONDS * 3)
        return page("open")

    assert added(before, asyncio.run(requests())) == observed(LATENCIES)


def test_counts_outside_an_event_loop_are_added_at_once():
    metrics.prepare()
    before = page("initial_open")
    for seconds in LATENCIES:
        metrics.request("initial_open", "stored", seconds)
    assert added(before, page("initial_open")) == observed(LATENCIES)


def test_counts_of_a_loop_closed_before_its_fold_go_with_the_next_loops():
    metrics.prepare()
    before = page("unsubscribe")

    async def count(latencies: list[float], wait: float) -> None:
        for seconds in latencies:
            metrics.request("unsubscribe", "stored", seconds)
        await asyncio.sleep(wait)

    asyncio.run(count(LATENCIES[:4], 0))  # closed before its fold was due
    asyncio.run(count(LATENCIES[4:], metrics.FOLD_SECONDS * 3))
    assert added(before, page("unsubscribe")) == observed(LATENCIES)


def test_a_worker_process_ending_before_its_fold_keeps_its_counts(tmp_path):
    # As a Granian worker: a forked multiprocessing child counting into the multiprocess
    # files, ending right after its last request (its loop's fold timer never fires).
    script = textwrap.dedent(
        f"""
        import asyncio, multiprocessing, os, sys
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        sys.path.insert(0, {str(ROOT / "milter")!r})

        def worker():
            from smtpapi_milter.tracker import metrics
            metrics.prepare()

            async def requests():
                for _ in range(7):
                    metrics.request("click", "stored", 0.002)

            asyncio.run(requests())

        process = multiprocessing.get_context("fork").Process(target=worker)
        process.start()
        process.join()
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path={str(tmp_path)!r})
        labels = {{"kind": "click", "outcome": "stored"}}
        print(registry.get_sample_value("smtpapi_tracker_requests_total", labels))
        labels = {{"kind": "click", "le": "0.0025"}}
        print(registry.get_sample_value("smtpapi_tracker_response_seconds_bucket", labels))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["7.0", "7.0"], done.stderr
