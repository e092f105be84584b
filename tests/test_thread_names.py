"""Our threads carry their names for the operating system (thread_names.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from smtpapi_milter.thread_names import name_this_thread


def test_a_thread_is_named_for_the_operating_system():
    seen: list[str] = []

    def run() -> None:
        name_this_thread("journal-indexer-and-more")  # the kernel keeps 15 bytes
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["journal-indexer\n"]
