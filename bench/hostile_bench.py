"""Time and memory of the pipeline on the hostile inputs of tests/test_hostile.py.

Prints, for each case, the wall time of one pipeline run and the peak of Python allocations
during a second one (tracemalloc): the 10,000-link part, a body one byte under
max_tracked_size (20 MiB) with a link per 6 KB and with one per 90 bytes, one of bare
links (the security review's amplification), the 50 MB body over the limit, a 1 MB
X-MSYS-API header and 10,000 header fields.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from smtpapi_milter.cli import run_message  # noqa: E402
from smtpapi_milter.message_file import MessageFile, parse_message_file  # noqa: E402
from smtpapi_milter.replies import SmtpReplyError  # noqa: E402
from tests.test_hostile import (  # noqa: E402
    MIB,
    RCPT,
    TRACK,
    UNIT,
    bare_links,
    big_message,
    header,
)
from tests.test_pipeline import pipeline, single  # noqa: E402


def _run(parsed: MessageFile, **smtpapi) -> str:
    try:
        result = run_message(pipeline(**smtpapi), parsed.headers, parsed.body, RCPT, None)
    except SmtpReplyError as exc:
        return str(exc.reply)[:60]
    untracked = result.untracked
    return str(untracked) if untracked else f"{result.links_tracked} links tracked"


ANY_SIZE = {"mta_message_size_limit": 0}


def measure(name: str, message: bytes, **smtpapi) -> None:
    """One timed run, then one under tracemalloc (which slows allocation) for the peak."""
    parsed = parse_message_file(message)
    started = time.perf_counter()
    outcome = _run(parsed, **smtpapi)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    _run(parsed, **smtpapi)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = len(message) / MIB
    print(f"{name:40} {size:7.1f} MiB {seconds:8.3f} s  peak {peak / MIB:7.1f} MiB  {outcome}")


def main() -> int:
    links = b"".join(
        b'<p><a href="https://example.com/item/%d?a=1&amp;b=2">item %d</a></p>\r\n' % (i, i)
        for i in range(10_000)
    )
    ten_thousand = single("", header=TRACK).replace(b"\r\n\r\n", b"\r\n\r\n" + links)
    sparse = b"<p>" + b"Lorem ipsum dolor sit amet. " * 200 + UNIT[3:]
    fields = b"".join(b"X-Filler-%d: value %d\r\n" % (i, i) for i in range(10_000))
    measure("10,000 links in one HTML part", ten_thousand)
    # Where the MTA takes messages that big (mta_message_size_limit = 0): the engine's cost.
    measure("20 MiB - 1, a link per 6 KB", big_message(20 * MIB - 1, sparse), **ANY_SIZE)
    measure("20 MiB - 1, a link per 90 bytes", big_message(20 * MIB - 1), **ANY_SIZE)
    # The security review's amplification: a body of nothing but links. Over Postfix's
    # default size limit it is not even analysed; where the MTA takes it, the link budget
    # (max_tracked_links) bounds what tracking adds.
    bare = single("", header=TRACK).replace(b"\r\n\r\n", b"\r\n\r\n" + bare_links(20 * MIB - 64))
    measure("20 MiB - 1 of bare links", bare)
    measure("20 MiB - 1 of bare links, no MTA limit", bare, **ANY_SIZE)
    measure("50 MiB, over max_tracked_size", big_message(50 * MIB))
    measure(
        "1 MiB X-MSYS-API metadata",
        single("<p>x</p>", header=header(b'{"metadata": {"k": "' + b"v" * MIB + b'"}}')),
    )
    measure(
        "10,000 header fields",
        single('<a href="https://example.com/">x</a>', header=TRACK + fields),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
