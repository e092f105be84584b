"""How fast a backlog drains to a webhook: events stored, then delivered to a local receiver.

Usage: ``python bench/webhook_bench.py [--store URL] [--events N]``. Without ``--store`` a
fresh SQLite file is used; pass ``--postgres`` to run a private PostgreSQL server instead (the
test harness's). Prints events per second from dispatcher start until every event has been
acknowledged by the receiver (loopback HTTP, SparkPost batch size).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test harness: receiver and PostgreSQL server

from smtpapi_milter.config import WebhookConfig  # noqa: E402
from smtpapi_milter.events.store import open_store  # noqa: E402
from smtpapi_milter.events.webhooks import DeliveryTuning, WebhookDispatcher  # noqa: E402
from tests.harness.postgres import PostgresServer  # noqa: E402
from tests.harness.webhook_receiver import WebhookReceiver  # noqa: E402


def click(n: int) -> dict:
    return {
        "type": "click",
        "event_id": f"click-{n}",
        "timestamp": str(int(time.time())),
        "rcpt_to": f"user{n}@example.com",
        "campaign_id": "spring",
        "target_link_url": "https://example.com/sale",
    }


def run(url: str, count: int) -> None:
    store = open_store(url)
    try:
        for start in range(0, count, 1000):
            store.record([click(n) for n in range(start, min(start + 1000, count))])
        with WebhookReceiver() as receiver:
            tuning = DeliveryTuning(start_at="earliest", max_wait=0.0)
            hooks = [WebhookConfig(url=receiver.url())]
            dispatcher = WebhookDispatcher(store, hooks, tuning=tuning)
            began = time.monotonic()
            dispatcher.start()
            stats = next(iter(dispatcher.stats().values()))
            while stats.events_delivered < count:
                time.sleep(0.005)
            spent = time.monotonic() - began
            dispatcher.stop()
    finally:
        store.close()
    kind = url.partition(":")[0]
    print(
        f"{kind}: {count} events in {stats.batches_delivered} batches, {spent:.2f} s, "
        f"{count / spent:.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="event store URL (default: a new SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="use a private PostgreSQL")
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(PostgresServer()).url
        else:
            url = (
                args.store or f"sqlite://{stack.enter_context(tempfile.TemporaryDirectory())}/e.db"
            )
        run(url, args.events)


if __name__ == "__main__":
    main()
