"""Remembering the results of pure functions of values that repeat from message to message.

A campaign sends the same From, Subject and X-MSYS-API in every message: work on them is
done once per value. Only short values are kept, so a hostile megabyte-long header is
worked on every time and never held.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

_Value = TypeVar("_Value", str, bytes)
_Result = TypeVar("_Result")


def remember_short(
    limit: int, entries: int = 512
) -> Callable[[Callable[[_Value], _Result]], Callable[[_Value], _Result]]:
    """``functools.lru_cache`` of ``entries`` results, for arguments up to ``limit`` long."""

    def wrap(func: Callable[[_Value], _Result]) -> Callable[[_Value], _Result]:
        cached = functools.lru_cache(maxsize=entries)(func)

        @functools.wraps(func)
        def call(value: _Value) -> _Result:
            return cached(value) if len(value) <= limit else func(value)

        return call

    return wrap
