"""A log file followed as ``tail -F`` would, resuming exactly where a stored position says.

A position is (inode, offset, tail): the file, how far into it every complete line has been
handled, and the last bytes before that offset. The tail is the guard: a file truncated and
written again (copytruncate) or replaced by another that happens to get the same inode would
otherwise be read from a wrong offset.

Rotation while following:
- rename and reopen (logrotate's default, ``postfix logrotate``, rsyslog): the path names a new
  file; the old one, still open here, is read to its end first, then the new one from 0;
- copytruncate: the same file shrinks (or its tail no longer matches); the lines that were
  copied away before we read them are read from the copy, then the file from 0.

After a restart the stored inode may no longer be at the path: the rotated files beside it
(``maillog.1``, ``maillog-20261204``, ``maillog.20261204-153909.gz``, compressed or not) are
searched for the one holding the stored tail at the stored offset; it is read from there,
then every newer rotated file, then the current one. Nothing found (the file is gone): the
current file is read from its start, and a warning says lines may have been missed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger("smtpapi_milter.maillog.file_source")

# How rotated copies may be compressed (logrotate's compresscmd, maillog_file_compressor).
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
TAIL_BYTES = 64
READ_SIZE = 256 * 1024
LONGEST_LINE = 64 * 1024  # a longer "line" is cut: no writer of mail logs writes one


@dataclass(frozen=True)
class FilePosition:
    inode: int
    offset: int
    tail: bytes


@dataclass
class _Open:
    """One file being read: its stream, the inode it stands for, and how far it is read."""

    stream: BinaryIO
    inode: int
    offset: int
    tail: bytes
    rotated: bool  # a rotated file: read it to its end, then move on


class FileSource:
    """Complete lines of the log at ``path``, in order, with the position after each batch."""

    def __init__(self, path: str | Path, stored: FilePosition | None):
        self.path = Path(path)
        self.name = str(self.path)
        self._queue: list[_Open] = []  # files to read before the current one, oldest first
        self._current: _Open | None = None
        self._position = stored
        self._resume(stored)

    # --- starting -------------------------------------------------------------------------

    def _resume(self, stored: FilePosition | None) -> None:
        if stored is None:
            return  # the current file from its start, once it exists
        info = _stat(self.path)
        if info is not None and info.st_ino == stored.inode:
            stream = self.path.open("rb")
            if _tail_at(stream, stored.offset, stored.tail):
                self._current = _Open(stream, stored.inode, stored.offset, stored.tail, False)
                return
            stream.close()
        found = self._find_rotated(stored)
        if found is None:
            log.warning(
                "stored position not found in the log or its rotated files: reading the "
                "current file from its start; lines written meanwhile may be missed",
                path=self.name,
                inode=stored.inode,
                offset=stored.offset,
            )
            return
        opened, path = found
        self._queue.append(opened)
        rotated = self._rotated_files()
        for newer in rotated[rotated.index(path) + 1 :]:
            stream = _open_log(newer)
            if stream is not None:
                # A gzipped copy has an inode of its own; the tail is what finds it again.
                self._queue.append(_Open(stream, os.stat(newer).st_ino, 0, b"", True))

    def _rotated_files(self) -> list[Path]:
        """Rotated copies of the log beside it, oldest first."""
        directory, base = self.path.parent, self.path.name
        try:
            names = [
                entry
                for entry in directory.iterdir()
                if entry.name != base and entry.name.startswith((base + ".", base + "-"))
            ]
        except OSError:
            return []
        return sorted(names, key=lambda p: _age_order(p.name[len(base) + 1 :]))

    def _find_rotated(self, stored: FilePosition) -> tuple[_Open, Path] | None:
        """The rotated file holding ``stored.tail`` right before ``stored.offset``."""
        for path in reversed(self._rotated_files()):  # newest first: the likeliest
            stream = _open_log(path)
            if stream is None:
                continue
            if _tail_at(stream, stored.offset, stored.tail):
                return _Open(stream, stored.inode, stored.offset, stored.tail, True), path
            stream.close()
        return None

    # --- reading --------------------------------------------------------------------------

    def read_blocks(self, limit: int) -> tuple[list[bytes], FilePosition | None]:
        """Up to ``limit`` complete lines and the position after them, to be stored with
        what they produced; ([], None) when nothing is new. The lines come in blocks as the
        file held them, each some whole lines joined by newlines (``block.split(b"\\n")``
        gives them, without their newlines): a reader looking for a few of them searches a
        block at once instead of making an object per line (maillog/marked.py)."""
        blocks: list[bytes] = []
        lines = 0
        current = self._current
        # Truncated and written again since the last batch (copytruncate): the bytes before
        # our offset changed, and reading on from it would start mid-file.
        if (
            not self._queue
            and current is not None
            and not _tail_at(current.stream, current.offset, current.tail)
        ):
            self._truncated(current)
        while lines < limit:
            reading = self._reading()
            if reading is None:
                break
            block, count = self._block_from(reading, limit - lines)
            if count:
                blocks.append(block)
                lines += count
            elif not self._advance(reading):
                break
        return blocks, (self._position if blocks else None)

    def _reading(self) -> _Open | None:
        if self._queue:
            return self._queue[0]
        if self._current is None:
            self._current = _open_current(self.path)
        return self._current

    def _block_from(self, reading: _Open, limit: int) -> tuple[bytes, int]:
        """The next up to ``limit`` complete lines of ``reading`` as one block, and how many."""
        # No buffer is kept between calls: the stream always stands at reading.offset, so
        # a partial last line is simply read again next time.
        data = reading.stream.read(READ_SIZE)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= LONGEST_LINE:
                return self._consumed(reading, data, LONGEST_LINE, data[:LONGEST_LINE], 1)
            reading.stream.seek(reading.offset)
            return b"", 0
        block = data[:end]
        count = block.count(b"\n") + 1
        used = end + 1
        if count > limit:
            block = b"\n".join(block.split(b"\n", limit)[:limit])
            count, used = limit, len(block) + 1
        if used != len(data):
            reading.stream.seek(reading.offset + used)
        return self._consumed(reading, data, used, block, count)

    def _consumed(
        self, reading: _Open, data: bytes, used: int, block: bytes, count: int
    ) -> tuple[bytes, int]:
        """The first ``used`` bytes of ``data`` are read: ``block``, ``count`` lines."""
        reading.offset += used
        reading.tail = (reading.tail + data[max(0, used - TAIL_BYTES) : used])[-TAIL_BYTES:]
        self._position = FilePosition(reading.inode, reading.offset, reading.tail)
        return block, count

    def _advance(self, reading: _Open) -> bool:
        """At the end of ``reading``: move to what comes next, if anything does."""
        if reading.rotated:
            self._queue.pop(0).stream.close()
            return True
        info = _stat(self.path)
        if info is None:
            return False  # renamed away, the new file not created yet: keep reading this
        if info.st_ino != reading.inode:
            # Renamed away and a new file in its place: read the old one to its end once
            # more (its writer may have added lines since), then the new one.
            reading.rotated = True
            self._queue.append(reading)
            self._current = None
            return True
        if info.st_size < reading.offset or not _tail_at(
            reading.stream, reading.offset, reading.tail
        ):
            self._truncated(reading)
            return True
        return False

    def _truncated(self, reading: _Open) -> None:
        """copytruncate: the lines up to the truncation are in a copy beside the file."""
        stored = FilePosition(reading.inode, reading.offset, reading.tail)
        reading.stream.close()
        self._current = None
        found = self._find_rotated(stored)
        if found is not None:
            self._queue.append(found[0])
        else:
            log.warning("log truncated; its copy was not found beside it", path=self.name)

    def close(self) -> None:
        for reading in [*self._queue, self._current]:
            if reading is not None:
                reading.stream.close()
        self._queue, self._current = [], None


def _open_current(path: Path) -> _Open | None:
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return None
    return _Open(stream, os.fstat(stream.fileno()).st_ino, 0, b"", False)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _age_order(suffix: str) -> tuple[int, str]:
    """Sort key of a rotated file's suffix, oldest first. Not by mtime: a compressor may give
    the older file the newer time. ``.1`` is newer than ``.2`` (logrotate's numbers);
    dates (``-20261204``, ``.20261204-153909``, as ``postfix logrotate`` names them) sort
    as written."""
    stem = suffix
    for extension in COMPRESSED:
        stem = stem.removesuffix(extension)
    if stem.isdigit() and len(stem) <= 4:
        return -int(stem), ""
    return 0, stem


def _open_log(path: Path) -> BinaryIO | None:
    try:
        opener = COMPRESSED.get(path.suffix)
        if opener is not None:
            return opener(path, "rb")  # type: ignore[no-any-return]
        return path.open("rb")
    except OSError:
        return None


def _tail_at(stream: BinaryIO, offset: int, tail: bytes) -> bool:
    """Whether ``stream`` holds ``tail`` right before ``offset``; leaves it at ``offset``."""
    if len(tail) != min(offset, TAIL_BYTES):
        return False
    try:
        stream.seek(offset - len(tail))
        if stream.read(len(tail)) != tail:
            return False
        return stream.tell() == offset
    except (OSError, EOFError, lzma.LZMAError):  # BadGzipFile is an OSError
        return False
