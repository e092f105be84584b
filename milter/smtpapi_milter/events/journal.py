"""The tracker's event journal: durable on append, indexed into the store off the hot path.

Storing a click in the store before its redirect made every answer wait for an SQLite insert
touching seven B-trees (or a PostgreSQL round trip) and its flush; that insert was the
tracker's ceiling. Now an answered click is first *appended* to a journal file of its worker
process and flushed (``O_DSYNC`` write, one per group of requests, before any of them is
answered); the node's journal indexer (journal_indexer.py, a process of its own) then inserts
the same events into the store, together with the journal's position in the same
transaction. So:

- every answered click is on disk before its answer (the journal);
- after a crash (SIGKILL, power loss) the store holds a prefix of each journal, and its
  stored position says exactly where the rest starts: indexing from there neither loses
  nor repeats an event (and ``event_id`` is unique in the store besides);
- the store and its readers (admin API, dashboard, webhooks) lag the answers by the
  indexing delay: a few tens of milliseconds when idle, longer under load or while the
  store is down.

One journal file per worker process (no lock shared between processes on the hot path),
named by creation time and pid, held under an exclusive ``flock`` while its worker writes
it. A new file is written full of zero bytes first (``ROTATE_BYTES``, flushed), and records
then overwrite them: a flushed write into blocks already on disk changes no file metadata,
so the file system has no journal commit to make for it. On the test machine's ext4 an
``O_DSYNC`` append cost 73 us of CPU (the whole machine's, its journal threads included)
and 173 us of wall time; the same write over written zeros 37 us and 101 us. A journal's
records therefore end at its first zero byte (JSON text holds none), not at its size.

A worker starts a new file past ``ROTATE_BYTES`` and lets go of the old one; a file nobody
holds (left behind, or its worker died) is indexed to its end and deleted by the
indexer. So a journal holds at most about that much of events already in the store (an
erased recipient's clicks may stay there that long; the indexer applies erasure like every
other insert, so they are never stored). A new file is locked before it gets its journal
name, so the indexer never sees one that is not held yet.

The next file is made ready beforehand, by a thread of its own once the current one is
half full (a *spare*: held, named, all zeros), so that no answer waits for a file to be
made. Making one (a megabyte of zeros written and flushed, the directory synced) took
2.3-2.4 ms on an idle disk writing 175 MB/s, 4-14 ms while another process wrote to it,
and every click of the group that rotated waited that long: at ~700 bytes a click, close
to one in a hundred. The zeros are written in pieces of ``ZERO_PIECE``, each flushed, so
that the worker's appends wait behind one piece at most, not the megabyte. Two trackers
side by side, the journal indexer stopped (the store's writes apart), 4 paced runs each at
~5,200 clicks/s (half the peak) alternating: p99 6.2-7.1 ms, median 6.9, making the file
at the rotation; 5.4-6.7, median 6.2, with a spare.

A record is ``crc32(body) body\\n``: ``body`` is a group's events, each event's JSON text
(the store's payload, events/payload.py) after a record separator byte 0x1E, as RFC 7464's
JSON text sequences frame them (without their line feed: a line is a record here); or
``{"folds": [...]}`` with the flood guard's folded counts (floods.py) written with that
group, each count the list of its ``token_floods`` columns. JSON text holds no raw control
character, so separators and line ends are unambiguous. The indexer stores each text as
the worker wrote it, and parses it (exactly: events/payload.py) for the columns only. It
used to parse a group's list with orjson and encode each event again: orjson reads an
integer beyond 64 bits (a sender's metadata) as a float, and such a click was stored with
the float. Journals of earlier releases hold the JSON list of a group's events; they are
still read, exactly. Only a file's tail can be torn (appends by one thread, each flushed
before the next); a record whose line is incomplete or whose checksum is wrong was never
acknowledged, and indexing stops there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from . import floods, payload
from .store import EventStore, LazyStore, encode_payload

SUFFIX = ".journal"
SEPARATOR = "\x1e"  # before each event's text in a record (RFC 7464)
ROTATE_BYTES = 1 << 20
ZERO_PIECE = 64 << 10  # a flushed write of zeros into a new journal (see above)

Events = list[dict[str, Any]]
Folds = list[floods.FloodCount]


def encode_payloads(events: Events) -> list[str]:
    """Each event's JSON as the store keeps it: made once, journaled, then stored."""
    return [encode_payload(event) for event in events]


def _framed(body: bytes) -> bytes:
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def encode_record(events: Events, payloads: list[str] | None = None) -> bytes:
    if payloads is None:
        payloads = encode_payloads(events)
    # UTF-8: encode_payload (orjson) keeps non-ASCII text as it is; no lone surrogates reach
    # it (those go through the stdlib's ASCII escapes).
    return _framed("".join([SEPARATOR + text for text in payloads]).encode("utf-8"))


def encode_folds(folds: Folds) -> bytes:
    """The record of folded counts (ASCII escapes: a target URL may hold anything)."""
    return _framed(json.dumps({"folds": [count.row() for count in folds]}).encode("ascii"))


class Record(NamedTuple):
    end: int  # the journal's offset just past the record
    events: Events
    payloads: list[str]  # each event's JSON text, as the store keeps it
    folds: Folds


def _events(body: bytes) -> tuple[Events, list[str]]:
    text = body.decode("utf-8")
    if not text:  # a group without events
        return [], []
    if text.startswith(SEPARATOR):
        payloads = text[1:].split(SEPARATOR)
        return [*map(payload.decode, payloads)], payloads
    # An earlier release's record, one JSON list: read exactly (a metadata integer beyond
    # 64 bits stays one), and each event's text made as the worker would have made it.
    events = payload.decode(text)
    if not isinstance(events, list):
        raise ValueError("a journal record that is neither events nor folded counts")
    return events, encode_payloads(events)


def parse_records(data: bytes, start: int) -> Iterator[Record]:
    """Each whole, intact record at the head of ``data``, which was read from offset
    ``start`` of a journal."""
    zero = data.find(b"\0")
    if zero >= 0:  # the zeros not yet written over
        data = data[:zero]
    offset = 0
    while (newline := data.find(b"\n", offset)) >= 0:
        line = data[offset:newline]
        if len(line) < 9 or line[8:9] != b" ":
            return
        body = line[9:]
        try:
            if int(line[:8], 16) != zlib.crc32(body):
                return
            if body.startswith(b'{"folds"'):
                rows = json.loads(body)["folds"]
                record = Record(0, [], [], [floods.FloodCount(*row) for row in rows])
            else:
                record = Record(0, *_events(body), [])
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return
        offset = newline + 1
        yield record._replace(end=start + offset)


def read_records(path: Path, start: int) -> Iterator[Record]:
    """:func:`parse_records` of the file ``path`` from offset ``start``."""
    with path.open("rb") as journal:
        journal.seek(start)
        yield from parse_records(journal.read(), start)


def written_end(path: Path, start: int = 0) -> int:
    """Where what was written to journal ``path`` ends (its first zero byte at or after
    ``start``, else its size)."""
    with path.open("rb") as journal:
        journal.seek(start)
        offset = start
        while chunk := journal.read(1 << 20):
            zero = chunk.find(b"\0")
            if zero >= 0:
                return offset + zero
            offset += len(chunk)
        return offset


class Journal:
    """The appending side of one worker process (its appends take turns: recorder.py)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.name, self._fd = _create(directory)
        self._size = 0
        self._spare: tuple[str, int] | None = None  # the next journal, made ready
        self._making: threading.Thread | None = None  # making it

    def spare_name(self) -> str | None:
        """The next journal's name once it is ready (for tests)."""
        self._wait_for_spare()
        return self._spare[0] if self._spare else None

    def _wait_for_spare(self) -> None:
        """Until the thread making the spare, if any, is done."""
        if self._making is not None:
            self._making.join()
            self._making = None

    def _make_spare(self) -> None:
        # The disk refused: the rotation tries again, and fails its append if it refuses then.
        with contextlib.suppress(OSError):
            self._spare = _create(self.directory)

    def _rotate(self) -> None:
        self._wait_for_spare()  # appends outran it: wait for it rather than make another
        spare, self._spare = self._spare, None
        name, fd = spare if spare is not None else _create(self.directory)
        old = self._fd
        self.name, self._fd, self._size = name, fd, 0
        os.close(old)  # let go of the full one: the indexer finishes and deletes it

    def append(
        self, groups: list[Events], payloads: list[list[str]] | None = None, folds: Folds = ()
    ) -> tuple[str, int]:
        """Write each group as a record, then ``folds`` if any, and flush them all; return
        (journal, end offset). OSError if the disk refused: nothing acknowledged.
        ``payloads``: each group's :func:`encode_payloads`, if made already."""
        if self._size >= ROTATE_BYTES:
            self._rotate()
        texts = payloads if payloads is not None else [None] * len(groups)
        data = b"".join(
            encode_record(events, made) for events, made in zip(groups, texts, strict=True)
        )
        if folds:
            data += encode_folds(list(folds))
        if not data:
            return self.name, self._size
        try:
            _write_all(self._fd, data, self._size)  # flushed by O_DSYNC (see _open_new)
        except OSError:
            # Whatever part reached the file is a torn tail nobody was told about: zeros
            # over it (the next records overwrite it anyway), so nobody reads it meanwhile.
            with contextlib.suppress(OSError):
                _write_all(self._fd, bytes(len(data)), self._size)
            raise
        self._size += len(data)
        if self._size >= ROTATE_BYTES // 2 and self._spare is None and self._making is None:
            self._making = threading.Thread(
                target=self._make_spare, name="journal-spare", daemon=True
            )
            self._making.start()
        return self.name, self._size

    def close(self) -> None:
        """Let go of the journal and of the spare (the indexer finishes the one and deletes
        both)."""
        self._wait_for_spare()
        for fd in (self._fd, self._spare[1] if self._spare else -1):
            if fd >= 0:
                os.close(fd)
        self._fd, self._spare = -1, None


def _create(directory: Path) -> tuple[str, int]:
    """A new journal in ``directory``, full of zeros, held, named: (name, descriptor)."""
    name = f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
    # O_DSYNC: each write returns once its data is on disk, as write + fdatasync did, in
    # one system call; the thread that appends (a worker's event loop, recorder.py) lets
    # go of the GIL and takes it back once per group instead of twice.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_DSYNC
    # Locked under a name the indexer does not look at, then renamed: a journal it finds
    # unlocked is one nobody will write again, so it may index it to its end and delete it.
    new = directory / (name + ".new")
    fd = os.open(new, flags, 0o600)
    try:
        zeros = bytes(min(ZERO_PIECE, ROTATE_BYTES))  # the zeros records overwrite (see above)
        for offset in range(0, ROTATE_BYTES, len(zeros)):
            _write_all(fd, zeros[: ROTATE_BYTES - offset], offset)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, directory / name)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(new)
        raise
    _sync_directory(directory)  # the file itself survives a power cut
    return name, fd


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backlog(directory: Path, store: EventStore | LazyStore) -> int:
    """Bytes of the journals in ``directory`` not yet in ``store`` (0: every answered event
    is indexed). For tests and tools that read the store right after clicks."""
    if not any(directory.glob("*" + SUFFIX)):
        return 0

    def positions(cur: Any) -> dict[str, int]:
        cur.execute("SELECT journal, position FROM journal_positions")
        return {name: int(position) for name, position in cur.fetchall()}

    indexed = store.transaction(positions, write=False)
    behind = 0
    for path in directory.glob("*" + SUFFIX):
        start = indexed.get(path.name, 0)
        with contextlib.suppress(FileNotFoundError):  # indexed and deleted meanwhile
            behind += max(0, written_end(path, start) - start)
    return behind
