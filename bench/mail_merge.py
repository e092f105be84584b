"""The mail-merge load for the throughput benchmark (SPEC 11), and the client that sends it.

A newsletter that goes out mail-merged is one template, but every copy differs: it greets
its reader by name and carries the reader's own account and preference links (signed per
reader, as senders do so the links work without a login). So no two bodies are the same and
nothing a milter learnt from one copy's bytes applies to the next as it is.

The client is deliberately minimal (asyncio, one persistent connection per session, MAIL,
RCPT and DATA pipelined as Postfix advertises PIPELINING, messages dot-stuffed beforehand):
on a two-core machine every cycle it spent would be taken from Postfix and the milter.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence

from tests import corpus

FIRST = (  # noqa: SIM905 (a list of 26 quoted names would be 26 lines)
    "Amelia Bruno Chiara Dmitri Elena Farid Greta Hiroshi Ines Jonas Kalinda Luca Maren "
    "Nadia Oskar Priya Quentin Rosa Sven Tamsin Umar Vera Wen Ximena Yusuf Zofia"
).split()
LAST = (  # noqa: SIM905
    "Andersson Okafor Rossi Novak Haddad Moreau Tanaka Kowalski Fischer O'Brien Silva "
    "Lindqvist Petrov Nakamura Dubois Jensen Costa Schmidt Varga Murphy Ahmed Keller"
).split()
_BODY_START = re.compile(rb"<body[^>]*>", re.I)
_BODY_END = re.compile(rb"</body\s*>", re.I)


def reader(n: int) -> tuple[str, str]:
    """Reader ``n``'s name and address."""
    first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
    local = f"{first}.{last}{n}".lower().replace("'", "")
    return f"{first} {last}", f"{local}@example.org"


def personalise(html: bytes, n: int) -> bytes:
    """The template as reader ``n`` gets it: greeted by name, with their own links."""
    name, address = reader(n)
    sig = hashlib.sha256(address.encode()).hexdigest()[:20]
    greeting = f'<p style="font-family:Arial,sans-serif;font-size:16px">Hello {name},</p>'
    footer = (
        '<p style="font-family:Arial,sans-serif;font-size:12px;color:#666">'
        f"This issue was sent to {address}. "
        f'<a href="https://www.example.com/account?reader={n}&amp;sig={sig}">Your account</a>'
        " &middot; "
        f'<a href="https://www.example.com/preferences?reader={n}&amp;sig={sig}">'
        "Email preferences</a></p>"
    )
    start = _BODY_START.search(html)
    end = _BODY_END.search(html)
    if start is None or end is None:
        raise ValueError("the template has no <body> ... </body>")
    return (
        html[: start.end()]
        + greeting.encode()
        + html[start.end() : end.start()]
        + footer.encode()
        + html[end.start() :]
    )


def copies(template: bytes, count: int) -> list[tuple[str, bytes]]:
    """``count`` mail-merged messages (recipient, message) from the HTML ``template``:
    multipart/alternative, quoted-printable, tracking on, each To and Message-ID its own."""
    out = []
    for n in range(count):
        name, address = reader(n)
        message = corpus.wrap_html(personalise(template, n), "quoted-printable")
        message = message.replace(
            b"To: Jane Doe <jane.doe@example.org>", f"To: {name} <{address}>".encode(), 1
        ).replace(b"<corpus.1@example.com>", f"<merge.{n}@example.com>".encode(), 1)
        out.append((address, message))
    return out


def wire(message: bytes) -> bytes:
    """``message`` as DATA sends it: CRLF lines, dot-stuffed, with the final dot."""
    data = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def _reply(reader_: asyncio.StreamReader, expect: bytes) -> None:
    while True:
        line = await reader_.readline()
        if not line:
            raise ConnectionError("SMTP server closed the connection")
        if line[3:4] != b"-":
            if not line.startswith(expect):
                raise RuntimeError(f"SMTP: expected {expect.decode()}, got {line!r}")
            return


async def _session(
    port: int, sender: str, jobs: asyncio.Queue[tuple[str, bytes]], timeout: float
) -> int:
    stream_in, stream_out = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), timeout
    )
    sent = 0
    try:
        await asyncio.wait_for(_reply(stream_in, b"220"), timeout)
        stream_out.write(b"EHLO merge.example.com\r\n")
        await asyncio.wait_for(_reply(stream_in, b"250"), timeout)
        while not jobs.empty():
            rcpt, data = jobs.get_nowait()
            stream_out.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            for expect in (b"250", b"250", b"354"):
                await asyncio.wait_for(_reply(stream_in, expect), timeout)
            stream_out.write(data)
            await asyncio.wait_for(_reply(stream_in, b"250"), timeout)
            sent += 1
        stream_out.write(b"QUIT\r\n")
        await stream_out.drain()
    finally:
        stream_out.close()
    return sent


async def _send(
    port: int, sender: str, messages: Sequence[tuple[str, bytes]], sessions: int, timeout: float
) -> int:
    jobs: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for job in messages:
        jobs.put_nowait(job)
    done = await asyncio.gather(
        *(_session(port, sender, jobs, timeout) for _ in range(min(sessions, len(messages))))
    )
    return sum(done)


def send(
    port: int,
    sender: str,
    messages: Sequence[tuple[str, bytes]],
    sessions: int,
    timeout: float = 120,
) -> int:
    """Send (recipient, wire bytes) pairs over ``sessions`` SMTP connections to
    127.0.0.1:``port``; each connection takes the next message until none is left.
    Returns how many were accepted; raises on any other reply."""
    return asyncio.run(_send(port, sender, messages, sessions, timeout))
