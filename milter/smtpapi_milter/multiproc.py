"""Directories for prometheus_client's multiprocess counter files (milter and tracker).

A process group whose workers count into files needs a private directory, removed when the
group stops. A group stopped by SIGKILL (the fault tests do it, an OOM killer may) never
removes its own, so each directory is named for the process that made it, and a new group
first removes the ones whose maker is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def counter_directory(prefix: str) -> str:
    """A new private directory named ``{prefix}{pid}-...`` in the temp directory, after
    removing this user's ``{prefix}`` directories whose process no longer runs."""
    own = re.compile(re.escape(prefix) + r"(\d+)-")
    for path in Path(tempfile.gettempdir()).glob(prefix + "*"):
        found = own.match(path.name)
        try:
            stale = found is not None and not _running(int(found[1]))
            if stale and path.is_dir() and path.stat().st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
