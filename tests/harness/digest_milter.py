"""A stand-in for a DKIM signer: a real pymilter that stamps the SHA-256 of the body it saw.

``python -m tests.harness.digest_milter PORT`` listens on 127.0.0.1:PORT. Like a signer, it
reads the body at end of message and adds one header; a test compares that digest with the
body that arrived, which is equal only when this milter ran after every body rewrite (the
order a DKIM signature needs to verify).
"""

from __future__ import annotations

import hashlib
import sys

import Milter

DIGEST_HEADER = "X-Test-Body-SHA256"


class BodyDigest(Milter.Base):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.digest = hashlib.sha256()
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.digest.update(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.addheader(DIGEST_HEADER, self.digest.hexdigest())
        return Milter.ACCEPT


def main(port: str) -> int:
    Milter.factory = BodyDigest
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("body-digest", f"inet:{int(port)}@127.0.0.1", timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
