"""The naive rewrite of SPEC 11's rewrite bar, as a program: what most open-source trackers do.

Parse each message with the email package, regex the decoded text/html and text/plain parts,
set the content back (re-encoding it), serialise. Each link gets a token made the way ours
are (JSON array, raw deflate, AES-SIV, base64url), so both sides pay for the same crypto and
the ratio measures the rest. Standard library plus ``cryptography`` only: it starts the way
such a script starts, without importing anything of ours.

    python bench/naive_rewrite.py --out-dir DIR FILE...
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import html
import json
import re
import sys
import time
import zlib
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

_HREF = re.compile(r"""href=(["'])(https?://[^"']+)\1""", re.I)
_URL = re.compile(r"https?://[^\s<>\"]+")
_CTES = {"quoted-printable", "base64", "8bit", "7bit"}
PIXEL = (
    '<img border="0" width="1" height="1" alt="" src="{url}" '
    'style="height:1px !important;width:1px !important;border-width:0 !important;'
    'margin:0 !important;padding:0 !important" />'
)


class Tokens:
    """Sealed tokens for one recipient: AES-SIV over the deflated JSON of the link's data."""

    def __init__(self, rcpt: str) -> None:
        self._cipher = AESSIV(bytes(range(32)))
        self._base = [0, "1", "0001", rcpt, int(time.time())]

    def url(self, target: str) -> str:
        plain = json.dumps([*self._base, 0, "", [], None, "", target]).encode()
        packed = zlib.compress(plain, 9, -12) if len(plain) > 64 else plain
        sealed = self._cipher.encrypt(packed, [b"\x02\x05bench"])
        token = base64.urlsafe_b64encode(b"\x02\x05bench" + sealed).rstrip(b"=").decode()
        return f"http://localhost:8080/c/{token}"


def rewrite(data: bytes, tokens: Tokens) -> bytes:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    del msg["X-MSYS-API"]
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.is_multipart() or part.is_attachment() or ctype not in ("text/html", "text/plain"):
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError, AssertionError):
            continue
        if ctype == "text/html":
            content = _HREF.sub(
                lambda m: f"href={m[1]}{tokens.url(html.unescape(m[2]))}{m[1]}", content
            )
            content = content.replace("</body>", PIXEL.format(url=tokens.url("open")) + "</body>")
        else:
            content = _URL.sub(lambda m: tokens.url(m[0]), content)
        cte = (part.get("Content-Transfer-Encoding") or "").strip().lower()
        try:
            part.set_content(content, subtype=ctype[5:], cte=cte if cte in _CTES else None)
        except (ValueError, LookupError):
            part.set_content(content, subtype=ctype[5:])
    return msg.as_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rcpt", default="jane.doe@example.org")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    tokens = Tokens(args.rcpt)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.files:
        data = Path(name).read_bytes()
        try:
            output = rewrite(data, tokens)
        except Exception as exc:  # the naive rewrite crashes on some real mail: counted
            print(f"{name}: {exc!r}", file=sys.stderr)
            failed += 1
            output = data
        (out_dir / Path(name).name).write_bytes(output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
