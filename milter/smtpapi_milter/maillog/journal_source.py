"""The MTA's log read from journald, resuming at a stored cursor.

Uses the systemd Python bindings (PyPI ``systemd-python``, built against libsystemd; Debian
``python3-systemd``). Only mail-facility entries are read (``SYSLOG_FACILITY=2``: Postfix and
Sendmail log there by default), from the system journal or, with ``[maillog]
journal_directory``, from the journal files in one directory. A cursor names one entry; a
restart reads from the entry after it. When that entry has since been vacuumed away the
journal places the reader at the next one, which is then read, not skipped.
"""

from __future__ import annotations

from typing import Any

from .lines import LogLine

MAIL_FACILITY = "2"


class JournalSource:
    """Entries as :class:`LogLine`\\s, with the cursor after each batch."""

    name = "journald"

    def __init__(self, cursor: str | None, directory: str = ""):
        from systemd import journal  # only a journald source needs the bindings

        self._reader = journal.Reader(path=directory) if directory else journal.Reader()
        self._reader.add_match(SYSLOG_FACILITY=MAIL_FACILITY)
        if cursor:
            self._reader.seek_cursor(cursor)
            if self._reader.get_next() and not self._reader.test_cursor(cursor):
                self._reader.get_previous()  # the stored entry is gone: keep its successor
        else:
            self._reader.seek_head()

    def read_entries(self, limit: int) -> tuple[list[LogLine], str | None]:
        """Up to ``limit`` entries and the cursor of the last; ([], None) if none is new."""
        lines: list[LogLine] = []
        cursor = None
        for _ in range(limit):
            entry = self._reader.get_next()
            if not entry and not lines:
                # Take in journal files added or rotated since (inotify), then look again.
                self._reader.wait(0)
                entry = self._reader.get_next()
            if not entry:
                break
            cursor = entry["__CURSOR"]
            lines.append(_line(entry))
        return lines, cursor

    def close(self) -> None:
        self._reader.close()


def _line(entry: dict[str, Any]) -> LogLine:
    stamp = entry.get("__REALTIME_TIMESTAMP")
    text = entry.get("MESSAGE", "")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    pid = entry.get("SYSLOG_PID") or entry.get("_PID") or ""
    return LogLine(
        stamp.timestamp() if stamp is not None else 0.0,
        str(entry.get("SYSLOG_IDENTIFIER", "")),
        str(pid),
        str(text),
    )
