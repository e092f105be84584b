"""The suppression list on the outside: SparkPost's JSON object and its CSV columns.

SparkPost's suppression object (https://developers.sparkpost.com/api/suppression-list/) has
``recipient``, ``type``, ``source``, ``description``, ``created`` and ``updated`` (ISO 8601), and
the deprecated booleans ``transactional`` / ``non_transactional``. Export writes those six
names as CSV columns. Import reads a header row and takes ``recipient`` (required), ``type``, or
SparkPost's older CSV form with ``transactional`` / ``non_transactional`` booleans instead (true
in both makes two entries), ``description`` and ``source`` (ours, or SparkPost's own names such
as "Manually Added"); ``created`` and ``updated`` are read as the import's time. Column names
are matched without regard to case; columns of other names are ignored.

Import is all-or-nothing: the whole file is checked first, and any bad row makes the command
fail naming the file, line and column of each problem (the first 20), with nothing imported.
A list half imported is hard to tell from a list fully imported, and the file is easy to fix
and run again (entries are upserts, so running it twice does no harm).
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from .store import (
    NON_TRANSACTIONAL,
    TRANSACTIONAL,
    Suppression,
    SuppressionError,
    entry_row,
)

CSV_COLUMNS = ("recipient", "type", "source", "description", "created", "updated")
# SparkPost's names of the sources (the API's enum), read on import.
SPARKPOST_SOURCES = {
    "spam complaint": "spam_complaint",
    "list unsubscribe": "list_unsubscribe",
    "bounce rule": "bounce",
    "unsubscribe link": "link_unsubscribe",
    "manually added": "manual",
    "compliance": "manual",
}
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f", ""}
MAX_REPORTED = 20


class CsvImportError(ValueError):
    """A CSV file the import refuses; ``problems`` name its lines and columns."""

    def __init__(self, path: str, problems: list[str], total: int):
        self.problems, self.total = problems, total
        more = f" (and {total - len(problems)} more)" if total > len(problems) else ""
        super().__init__(
            f"{path}: {total} bad row(s){more}, nothing imported:\n  " + "\n  ".join(problems)
        )


def iso(stamp: float) -> str:
    """Unix seconds as SparkPost writes times: 2017-10-01T12:00:00+00:00."""
    moment = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    return moment.replace(microsecond=0).isoformat()


def api_object(entry: Suppression) -> dict[str, Any]:
    """The entry as SparkPost's API shows one."""
    return {
        "recipient": entry.recipient,
        "type": entry.type,
        "source": entry.source,
        "description": entry.description,
        "created": iso(entry.created),
        "updated": iso(entry.updated),
        "transactional": entry.type == TRANSACTIONAL,
        "non_transactional": entry.type == NON_TRANSACTIONAL,
    }


def write_csv(entries: Iterable[Suppression], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in entries:
        writer.writerow(
            (
                entry.recipient,
                entry.type,
                entry.source,
                entry.description,
                iso(entry.created),
                iso(entry.updated),
            )
        )
        count += 1
    return count


def _flag(value: str, column: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SuppressionError(f"{column} {value!r} is not true or false")


def _source(value: str) -> str:
    word = value.strip()
    return SPARKPOST_SOURCES.get(word.lower(), word) or "manual"


def _row_entries(row: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(type, source, description) of each entry a CSV row asks for."""
    description = row.get("description", "") or ""
    source = _source(row.get("source", "") or "")
    if "type" in row:
        yield (row["type"] or "").strip() or NON_TRANSACTIONAL, source, description
        return
    kinds = [
        kind
        for kind in (TRANSACTIONAL, NON_TRANSACTIONAL)
        if kind in row and _flag(row[kind] or "", kind)
    ]
    if not kinds:
        raise SuppressionError("neither transactional nor non_transactional is true")
    for kind in kinds:
        yield kind, source, description


def read_csv(text: TextIO, path: str, now: float) -> list[tuple[Any, ...]]:
    """The checked rows a CSV file asks for, or CsvImportError naming every bad line."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvImportError(path, ["line 1: the file is empty (no header row)"], 1) from None
    except csv.Error as exc:
        raise CsvImportError(path, [f"line 1: {exc}"], 1) from None
    names = [name.strip().lstrip("\ufeff").lower() for name in header]
    if "recipient" not in names:
        raise CsvImportError(path, [f"line 1: no recipient column in the header {header!r}"], 1)
    if "type" not in names and not {TRANSACTIONAL, NON_TRANSACTIONAL} & set(names):
        names.append("type")  # recipients alone: non-transactional, SparkPost's default
    rows: list[tuple[Any, ...]] = []
    problems: list[str] = []
    total = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            total += 1
            problems.append(f"line {reader.line_num}: {exc}")
            break
        if not values or all(not value.strip() for value in values):
            continue
        row = dict(zip(names, values, strict=False))
        try:
            for kind, source, description in _row_entries(row):
                rows.append(entry_row(row.get("recipient", ""), kind, source, description, now))
        except SuppressionError as exc:
            total += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {reader.line_num}, column {_column_of(exc)}: {exc}")
    if total:
        raise CsvImportError(path, problems, total)
    return rows


def _column_of(exc: SuppressionError) -> str:
    """Which column an entry_row error is about (the checks name what they refused)."""
    text = str(exc)
    if text.startswith("neither"):
        return "transactional, non_transactional"
    for name in ("recipient", "source", "description", "type", NON_TRANSACTIONAL, TRANSACTIONAL):
        if text.startswith(name):
            return name
    return "recipient"


def csv_text(entries: Iterable[Suppression]) -> str:
    out = io.StringIO()
    write_csv(entries, out)
    return out.getvalue()
