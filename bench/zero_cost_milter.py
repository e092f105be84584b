"""The throughput benchmark's floor: a tracking pymilter whose tracking costs nothing.

SPEC 11 measures smtpapi-milter against "the same Postfix with a zero-cost tracking pymilter
(takes recipients and headers, deletes X-MSYS-API, puts in a tracked body made beforehand)".
This is that milter. It makes Postfix do everything a tracking milter makes it do: send the
recipients (answered, as a milter that may refuse one must), every header field and every
body chunk, delete the X-MSYS-API field and take a larger body back through ``replacebody``
in 64 KiB chunks. What it does not do is the tracking itself: the tracked body of each
recipient's message was made beforehand by the real pipeline (``bench/milter_bench.py``
writes them) and is looked up by the message's recipient. So ours minus this is exactly
the CPU our milter spends deciding and rewriting, which on a small machine it takes from
Postfix.

Kept as cheap as pymilter allows, like ours: stages it needs no answer to are not sent
(``nocallback``) or not answered (``noreply``), no per-message logging.

Usage: ``python bench/zero_cost_milter.py unix:/path BODIES_DIR`` where BODIES_DIR holds one
file per recipient, named by the address, with that recipient's tracked body, and optionally
a file named ``default`` for every other recipient (bulk: every body is the same). A message
for a recipient with neither is tempfailed (the bench must not measure a wrong floor quietly).
Runs until killed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import Milter

MILTER_NAME = "zero-cost-tracking"
REPLACE_CHUNK = 64 * 1024  # libmilter's own limit per SMFIR_REPLBODY packet
HEADER_NAME = "X-MSYS-API"
ACTIONS = Milter.CHGBODY | Milter.CHGHDRS
DEFAULT = "default"  # the file for recipients without one of their own (bulk: one body)
BODIES: dict[str, bytes] = {}  # recipient (lower case) -> tracked body, loaded at start


def load_bodies(directory: Path) -> dict[str, bytes]:
    return {path.name.lower(): path.read_bytes() for path in directory.iterdir()}


class ZeroCostTrackingMilter(Milter.Base):
    """One instance per SMTP connection."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self.api_headers = 0

    def negotiate(self, opts: list[int]) -> int:
        # As ours does: ask for exactly the actions used, not every one the MTA offers.
        verdict = super().negotiate(opts)
        opts[0] = self._actions = opts[0] & ACTIONS
        return verdict

    @Milter.nocallback
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def hello(self, hostname: str) -> int:
        return Milter.CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.recipients = []
        self.api_headers = 0
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to.strip("<>").lower())
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        if name.lower() == "x-msys-api":
            self.api_headers += 1
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE  # the tracked body was made beforehand

    def eom(self) -> int:
        body = None
        if self.recipients:
            body = BODIES.get(self.recipients[0]) or BODIES.get(DEFAULT)
        if body is None:
            self.setreply("451", "4.3.0", "zero-cost milter: no tracked body for this recipient")
            return Milter.TEMPFAIL
        for index in range(self.api_headers, 0, -1):
            self.chgheader(HEADER_NAME, index, None)
        for start in range(0, len(body), REPLACE_CHUNK):
            self.replacebody(body[start : start + REPLACE_CHUNK])
        return Milter.ACCEPT

    def abort(self) -> int:
        return Milter.CONTINUE


def main(argv: list[str] | None = None) -> None:
    """Run the zero-cost tracking milter on the given libmilter socket until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="libmilter socket, e.g. unix:/run/zero.sock")
    parser.add_argument("bodies", type=Path, help="directory: one tracked body per recipient")
    parser.add_argument("--timeout", type=int, default=600, help="MTA I/O timeout, seconds")
    args = parser.parse_args(argv)
    BODIES.update(load_bodies(args.bodies))
    if args.socket.startswith(("unix:", "local:")):
        os.umask(0o111)  # Postfix's smtpd (user postfix) must be able to connect
    Milter.factory = ZeroCostTrackingMilter
    Milter.set_flags(ACTIONS)
    Milter.runmilter(MILTER_NAME, args.socket, timeout=args.timeout)


if __name__ == "__main__":
    main()
