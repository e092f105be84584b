"""Debian's headless Chromium for tests of the dashboard, driven by Playwright for Python.

Playwright's Python package brings its own small driver and talks to the browser over the
DevTools protocol; it is pointed at ``/usr/bin/chromium`` (``playwright install``, which
downloads browsers, is never run). Its locators wait for what they look for, so tests
probe the page instead of sleeping. Chromium runs with the flags known to work on these
machines (no sandbox as root, no GPU, none of its own network traffic) and a fresh profile.

A missing browser is an error, never a skip: ``make deps`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[BrowserContext]:
    """A headless Chromium with a new profile directory, removed afterwards."""
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's 'chromium' (make deps does)")
    profile = tempfile.mkdtemp(prefix="smtpapi-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=FLAGS,
                viewport={"width": width, "height": height},
                locale="en-US",
                timezone_id="UTC",
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
