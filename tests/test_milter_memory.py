"""SPEC 11: the milter's memory stays bounded however many large messages arrive at once.

Ten concurrent 10 MB messages through a private Postfix into the milter (``make bench`` runs
the SPEC's 50 x 10 MB with bench/memory_bench.py); the resident memory of the milter's
process tree is sampled throughout. The ceiling (tests/milter_load.py, ``LoadResult.ceiling``)
is the baseline, plus ``max_concurrent_rewrites`` times what one such message costs when it
runs alone, plus each connection's in-memory spool and overhead: it does not grow with the
size of the messages waiting their turn. Before rewrites were limited, 50 x 10 MB took the
milter to 2.5 GB. The stated ceiling (mta/memory.py, in the README) must hold too: it puts
REWRITE_BYTES_PER_BODY_BYTE x the body in place of the measured cost of one message.
"""

from __future__ import annotations

import pytest

from smtpapi_milter.config import ConfigError, parse_config
from smtpapi_milter.mta import memory
from smtpapi_milter.mta.service import worker_environment

from .milter_load import MIB, concurrent_load

CLIENTS = 10


def test_concurrent_large_messages_stay_under_the_ceiling(tmp_path):
    result = concurrent_load(tmp_path, CLIENTS, 10 * MIB)
    print(result.summary())
    assert (result.delivered, result.tracked) == (CLIENTS, CLIENTS)
    assert result.single_peak > 5 * MIB  # the message really was loaded and rewritten
    assert result.peak_rss <= result.ceiling, result.summary()
    # The ceiling the README states, from the configuration alone (mta/memory.py).
    assert result.single_peak <= memory.rewrite_ceiling(result.message_bytes), result.summary()
    assert result.peak_rss <= result.stated_ceiling, result.summary()


def test_worker_gets_one_malloc_arena_unless_the_operator_chose():
    assert worker_environment({"PATH": "/bin"}) == {"PATH": "/bin", "MALLOC_ARENA_MAX": "1"}
    assert worker_environment({"MALLOC_ARENA_MAX": "4"})["MALLOC_ARENA_MAX"] == "4"


def test_one_rewrite_at_a_time_unless_the_operator_chose():
    # Two interleaved in one process cost more CPU and finish no sooner (config.py).
    assert parse_config({}).milter.max_concurrent_rewrites == 1
    chosen = parse_config({"milter": {"max_concurrent_rewrites": 3}})
    assert chosen.milter.max_concurrent_rewrites == 3


def test_rewrite_slots_must_be_at_least_one():
    with pytest.raises(ConfigError, match="'milter.max_concurrent_rewrites' must be at least 1"):
        parse_config({"milter": {"max_concurrent_rewrites": 0}})
