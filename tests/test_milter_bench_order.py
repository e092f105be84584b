"""bench/milter_bench.py turns the order of the milters each round, so none always runs first."""

from __future__ import annotations

import importlib
import sys

import pytest

from .harness.smtpapi import ROOT


@pytest.fixture
def milter_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    module = importlib.import_module("milter_bench")
    yield module
    sys.modules.pop("milter_bench", None)


def test_each_milter_runs_in_each_place_equally_often(milter_bench):
    names = ["ours", "before", "zero-cost"]
    orders = [milter_bench.round_order(names, n) for n in range(1, 7)]
    assert orders[0] == names  # the first round as before: ours first
    assert orders[1] == ["before", "zero-cost", "ours"]
    for place in range(3):
        assert sorted(order[place] for order in orders) == sorted(names * 2)
    two = [milter_bench.round_order(["ours", "zero-cost"], n) for n in (1, 2, 3)]
    assert two == [["ours", "zero-cost"], ["zero-cost", "ours"], ["ours", "zero-cost"]]
