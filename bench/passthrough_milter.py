"""The throughput benchmark's floor: a pymilter milter that replaces every body with itself.

SPEC 11 measures smtpapi-milter against "the same Postfix with a pymilter that only buffers
and replaces the body unchanged". This is that milter, kept fair: the same libmilter and
pymilter as ours, the same body round trip (every body chunk in, the whole body back out
through ``replacebody`` in 64 KiB chunks at end of message), and nothing else — no header
callbacks, no replies it does not need, no per-message logging. Anything slower than this
is our own cost.

Usage: ``python bench/passthrough_milter.py inet:PORT@127.0.0.1`` (libmilter socket syntax;
``unix:/path`` works too, created world-connectable). Runs until killed.

Transport matters more than the milter here: over loopback TCP, Postfix's unanswered milter
packets (macros before a skipped stage, noreply body chunks) and libmilter's two writes at
end of message (the body, then the final reply) meet Nagle and 40 ms delayed ACKs, which
caps one session at about ten messages a second whatever the milter does. Over a unix socket
there is no such stall. Compare two milters over the same kind of socket.
"""

from __future__ import annotations

import argparse
import os

import Milter

MILTER_NAME = "passthrough"
REPLACE_CHUNK = 64 * 1024  # libmilter's own limit per SMFIR_REPLBODY packet


class PassthroughMilter(Milter.Base):
    """Buffers the body and hands it back unchanged; one instance per SMTP connection."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    # Stages the floor does not look at: tell the MTA not to send them at all.
    @Milter.nocallback
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def hello(self, hostname: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def envfrom(self, mailfrom: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def envrcpt(self, to: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        body = b"".join(self.chunks)
        self.chunks = []
        for start in range(0, len(body), REPLACE_CHUNK):
            self.replacebody(body[start : start + REPLACE_CHUNK])
        return Milter.ACCEPT

    def abort(self) -> int:
        self.chunks = []
        return Milter.CONTINUE


def main(argv: list[str] | None = None) -> None:
    """Run the pass-through milter on the given libmilter socket until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="libmilter socket, e.g. inet:8891@127.0.0.1")
    parser.add_argument("--timeout", type=int, default=600, help="MTA I/O timeout, seconds")
    args = parser.parse_args(argv)
    if args.socket.startswith(("unix:", "local:")):
        # libmilter creates the socket with our umask; Postfix's smtpd (user postfix) must
        # be able to connect to it, and this process creates no other files.
        os.umask(0o111)
    Milter.factory = PassthroughMilter
    Milter.set_flags(Milter.CHGBODY)
    Milter.runmilter(MILTER_NAME, args.socket, timeout=args.timeout)


if __name__ == "__main__":
    main()
