"""CPU per stored click of the journal indexer's insert, in one thread, no tracker around it.

The tracker's indexer (events/journal.py) moves journaled clicks into the store with
``EventStore.insert_events(cur, events, payloads)`` inside a write transaction, a group of
events per commit. This does the same with clicks shaped as the tracker makes them
(events/model.py engagement_event: a few campaigns, many recipients, a parsed user agent,
payloads encoded beforehand as the journal does), into a fresh SQLite store holding each
recipient's injection and delivery (with their MTA queue ids) and earlier clicks, with
``synchronous=normal`` (no flush per commit: what is measured is the insert, not the disk), and
reports the CPU per row of the whole insert and of its Python part alone (``event_row``).

    flock /tmp/bench.lock .venv/bin/python bench/click_insert.py [--events N] [--group G]
    SMTPAPI_MILTER_SOURCE=/tmp/old/milter .venv/bin/python bench/click_insert.py  # before
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# SMTPAPI_MILTER_SOURCE: another checkout's milter/ (an older commit, for a before/after).
sys.path[:0] = [os.environ.get("SMTPAPI_MILTER_SOURCE", str(ROOT / "milter"))]

from smtpapi_milter.events.journal import encode_payloads  # noqa: E402
from smtpapi_milter.events.model import engagement_event, injection_event  # noqa: E402
from smtpapi_milter.events.store import event_row, open_store  # noqa: E402
from smtpapi_milter.ids import unique_event_id  # noqa: E402
from smtpapi_milter.tokens import TrackingData  # noqa: E402

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
PARSED = {"is_prefetched": False, "is_bot": False, "is_proxy": False, "family": "Chrome"}
READERS = 5000
CAMPAIGNS = ("spring-newsletter", "spring-offers", "member-news")


def clicks(count: int, start: float) -> list[dict]:
    """``count`` clicks of the newsletters' readers, a second apart from ``start``."""
    made = []
    for n in range(count):
        reader = n % READERS
        data = TrackingData(
            kind="click",
            transmission_id=str(7_000_000_000_000 + reader),
            message_id=f"0001{reader:012d}",
            rcpt_to=f"reader{reader}@example.org",
            injection_time=int(start) - 3600,
            campaign_id=CAMPAIGNS[reader % len(CAMPAIGNS)],
            tags=("newsletter",),
            metadata={"list": "weekly"},
            target_url=f"https://shop.example.com/item/{n % 25}?utm_source=newsletter",
            link_name=f"item-{n % 25}",
        )
        made.append(
            engagement_event(
                kind="click",
                event_id=unique_event_id(),
                now=start + n,
                data=data,
                ip_address="198.51.100.7",
                user_agent=AGENT,
                user_agent_parsed=PARSED,
            )
        )
    return made


def mailings(start: float) -> list[dict]:
    """What a store holds before its clicks: each reader's injection and delivery, both with
    the MTA's queue id (the store's other events; the clicks' indexes are shared with them)."""
    made = []
    for reader in range(READERS):
        injection = injection_event(
            event_id=unique_event_id(),
            transmission_id=str(7_000_000_000_000 + reader),
            message_id=f"0001{reader:012d}",
            rcpt_to=f"reader{reader}@example.org",
            campaign_id=CAMPAIGNS[reader % len(CAMPAIGNS)],
            customer_id="",
            tags=("newsletter",),
            metadata={"list": "weekly"},
            msg_from="news@example.com",
            friendly_from="News <news@example.com>",
            subject="This week's offers",
            injection_time=start + reader / 100,
            msg_size=48_000,
            mta_queue_id=f"4Q{reader:08X}",
        )
        delivery = {**injection, "type": "delivery", "event_id": unique_event_id()}
        made += [injection, delivery]
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="per round")
    parser.add_argument("--group", type=int, default=300, help="events per transaction")
    parser.add_argument("--prefill", type=int, default=20_000, help="clicks stored before")
    parser.add_argument("--rounds", type=int, default=5, help="each on a fresh store")
    parser.add_argument(
        "--drop", action="append", default=[], help="an index dropped first (what it costs)"
    )
    args = parser.parse_args()
    start = time.time() - 86400
    prefill = mailings(start - 2 * args.prefill) + clicks(args.prefill, start - args.prefill)
    events = clicks(args.events, start)
    payloads = encode_payloads(events)
    inserts, rows = [], []
    for _ in range(args.rounds):
        insert_cpu, rows_cpu = one_round(args, prefill, events, payloads)
        inserts.append(insert_cpu / args.events * 1e6)
        rows.append(rows_cpu / args.events * 1e6)
    print(
        f"{args.events} clicks in groups of {args.group} after {args.prefill},"
        f" {args.rounds} rounds: insert_events {min(inserts):.2f} us/row CPU at best,"
        f" {statistics.median(inserts):.2f} median (event_row alone {min(rows):.2f},"
        f" {statistics.median(rows):.2f})"
    )
    return 0


def one_round(
    args: argparse.Namespace, prefill: list[dict], events: list[dict], payloads: list[str]
) -> tuple[float, float]:
    """(CPU seconds of inserting ``events``, of making their rows alone), on a fresh store."""
    with tempfile.TemporaryDirectory(prefix="click-insert-") as tmp:
        store = open_store(f"sqlite://{tmp}/events.sqlite3?synchronous=normal")
        try:
            for index in args.drop:
                store.transaction(lambda cur, i=index: cur.execute(f"DROP INDEX {i}"), write=True)
            for group in _groups(prefill, args.group):
                store.transaction(lambda cur, g=group: store.insert_events(cur, g), write=True)
            batches = _groups(events, args.group), _groups(payloads, args.group)
            groups = list(zip(*batches, strict=True))
            gc.collect()
            gc.disable()
            try:
                began = time.process_time()
                for event, text in zip(events, payloads, strict=True):
                    event_row(event, text)
                rows_cpu = time.process_time() - began
                began = time.process_time()
                for group, texts in groups:
                    store.transaction(
                        lambda cur, g=group, t=texts: store.insert_events(cur, g, t), write=True
                    )
                insert_cpu = time.process_time() - began
            finally:
                gc.enable()
        finally:
            store.close()
    return insert_cpu, rows_cpu


def _groups(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


if __name__ == "__main__":
    sys.exit(main())
