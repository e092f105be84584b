"""Python's cyclic garbage collector paused for one batch of a bulk writer.

The log follower and the journal indexer turn a batch of input into some hundred thousand
dicts, tuples and lists, none of them in a cycle (reference counting frees them), and the
collector, run every 700 new ones, scanned them again and again while the batch was built:
11% of the follower's CPU over bench/maillog_bench.py's 200,000 lines; 24.7 -> 20.2-21.0 us
an event for the indexer (20,000 clicks in journal records of 40, in process, CPU time). A
cycle made meanwhile is collected after the batch.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the ``with`` (unless the collector was off already)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
