"""Secret files made on first start (link keys, the admin token): private, and made once.

When the milter and the tracker (or two tracker processes) start together, each may find
the file missing; whichever publishes first wins and the others must read its secret, not
replace it. The content is written in full to a private temporary file and then hard-linked
into place: link, unlike rename, fails when the name exists, and nobody ever sees a file
half written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def publish_once(path: Path, content: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``content``, unless it exists already.

    The directory is created (0700) if missing and synced afterwards, so the file survives
    a crash once this returns. OSError when it cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: keep its file
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
