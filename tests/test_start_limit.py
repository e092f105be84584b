"""The start-limit rule (start_limit.py); the real CLI runs are in test_startup_failures.py."""

from __future__ import annotations

from smtpapi_milter.start_limit import EXIT_START_LIMIT, StartLimit


def test_gives_up_after_the_burst_of_quick_identical_failures():
    limit = StartLimit(burst=3, up_seconds=10)
    assert not limit.exhausted(5, 0.5)
    assert not limit.exhausted(5, 0.7)
    assert limit.exhausted(5, 0.6)


def test_a_child_that_was_up_is_a_crash_and_starts_the_count_again():
    limit = StartLimit(burst=3, up_seconds=10)
    assert not limit.exhausted(5, 0.5)
    assert not limit.exhausted(5, 0.5)
    assert not limit.exhausted(-9, 3600)  # ran an hour, then killed: restart it
    assert not limit.exhausted(5, 0.5)
    assert not limit.exhausted(5, 0.5)


def test_a_different_failure_is_not_the_same_way():
    limit = StartLimit(burst=3, up_seconds=10)
    for code in (5, 5, 1, 5):
        assert not limit.exhausted(code, 0.5)


def test_a_supervisor_that_gave_up_is_not_restarted():
    assert StartLimit().exhausted(EXIT_START_LIMIT, 12.0)
