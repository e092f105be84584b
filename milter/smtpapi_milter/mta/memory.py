"""The memory one milter worker may use: the ceiling the README states and the tests check.

A worker holds, besides its baseline (interpreter, modules, caches): for each connection, the
in-memory part of its body spool and its thread; and for each rewrite in progress (at most
``[milter] max_concurrent_rewrites``), the body loaded, decoded, as text, its analysis and
the new body. Measured by tests/test_hostile.py on the worst shapes we know (a part of
nothing but links, base64, quoted-printable with a bare CR on every line, text whose one
emoji makes Python store every character in 4 bytes): at most about 12 bytes of Python
objects per byte of body (a 10 MB newsletter through Postfix: about 8 in resident memory),
so we state 16. The link budget (``max_tracked_links``)
keeps a part of bare links from costing more per byte than that (every link used to cost
its own token, site and edit: a 20.9 MB body took 1.05 GB), and a body only reaches the
rewrite if it is within ``max_tracked_size`` and its tracked form within the MTA's size
limit (``mta_message_size_limit``).
"""

from __future__ import annotations

from ..config import Config

MIB = 1024 * 1024
REWRITE_BYTES_PER_BODY_BYTE = 16
# One connection besides its spool: its thread, pymilter objects, headers (measured ~1.3 MiB).
CONNECTION_OVERHEAD = 2 * MIB
SLACK = 64 * MIB  # allocator rounding and sampling noise


def largest_rewritten_body(config: Config) -> int:
    """The largest body a worker rewrites: within max_tracked_size and the MTA's limit."""
    limit = config.smtpapi.mta_message_size_limit
    size = config.smtpapi.max_tracked_size
    return min(size, limit) if limit > 0 else size


def rewrite_ceiling(body_size: int) -> int:
    """What one rewrite of a ``body_size`` body may cost."""
    return REWRITE_BYTES_PER_BODY_BYTE * body_size


def worker_ceiling(
    config: Config, connections: int, baseline: int, body_size: int | None = None
) -> int:
    """The stated ceiling of one worker's resident memory with ``connections`` open at once,
    all with bodies of ``body_size`` bytes (default: the largest a worker rewrites)."""
    body = largest_rewritten_body(config) if body_size is None else body_size
    per_connection = config.milter.spool_memory_limit + CONNECTION_OVERHEAD
    return (
        baseline
        + config.milter.max_concurrent_rewrites * rewrite_ceiling(body)
        + connections * per_connection
        + SLACK
    )
