"""Transmission ids: unique across the worker processes of one node, increasing in each."""

from __future__ import annotations

import pytest

from smtpapi_milter.ids import NODE_BITS, SEQUENCE_BITS, IdGenerator


def test_workers_of_one_node_never_share_an_id():
    now = [1_800_000_000_000]
    generators = [IdGenerator(7, lambda: now[0], worker=w, workers=3) for w in range(3)]
    seen: set[int] = set()
    for step in range(3000):  # 700 ids per millisecond per worker: near its share of 1024
        if step % 700 == 0:
            now[0] += 1
        for generator in generators:
            value = generator.next_int()
            assert value not in seen
            seen.add(value)
    for generator in generators:
        first, second = generator.next_int(), generator.next_int()
        assert first < second
        assert (first >> SEQUENCE_BITS) & ((1 << NODE_BITS) - 1) == 7  # the node id stays


def test_one_worker_keeps_the_plain_layout():
    generator = IdGenerator(1, lambda: 1_800_000_000_000)
    assert generator.next_int() + 1 == generator.next_int()


@pytest.mark.parametrize("worker, workers", [(2, 2), (0, 1000)])
def test_impossible_worker_numbers_are_refused(worker, workers):
    with pytest.raises(ValueError):
        IdGenerator(0, worker=worker, workers=workers)
