"""Compiled helpers. Each has a pure-Python reference that tests compare it with;
SMTPAPI_PURE_PYTHON=1 forces the references."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None where the references serve: SMTPAPI_PURE_PYTHON=1,
    or a source tree without the build."""
    if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError:
        return None
