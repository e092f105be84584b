"""Fuzz the MIME walker and the whole pipeline with arbitrary messages.

The first input byte picks a mode (seeds.TRACKED / UNTRACKED / AS_IS); the rest is a message
file. Whatever it holds: no exception but an SMTP reply, the MIME tree the walker reports is
well formed, every output parses with the email package, a tracked message satisfies the
independent oracle (both messages taken as Postfix would pass them on), and an untracked one
comes out byte-identical (less X-MSYS-API).
"""

from __future__ import annotations

import email
import re
import sys

import atheris

with atheris.instrument_imports(include=["smtpapi_milter"]):
    from smtpapi_milter.cli import run_message
    from smtpapi_milter.config import parse_config
    from smtpapi_milter.message_file import parse_message_file
    from smtpapi_milter.pipeline import Pipeline
    from smtpapi_milter.replies import SmtpReplyError
    from smtpapi_milter.rewrite import mime
    from smtpapi_milter.tokens import TokenCodec

from .. import corpus
from ..oracle import judge
from .seeds import FUZZ_KEY

CODEC = TokenCodec([FUZZ_KEY])
RCPT = "jane.doe@example.org"


def _pipeline(**smtpapi: object) -> Pipeline:
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    return Pipeline(config, codec=CODEC)


# mode byte -> (header put in front of the message, pipeline)
MODES = {
    0: (corpus.TRACK_ALL + b"\r\n", _pipeline()),
    1: (b"", _pipeline()),
    2: (b"", _pipeline(open_tracking_enabled=True, click_tracking_enabled=True)),
}


def check_tree(part: mime.MimePart, size: int) -> None:
    """Offsets nest and never leave the body; children are in order and do not overlap."""
    assert 0 <= part.start <= part.body_start <= part.end <= size, part
    previous = part.body_start
    for child in part.children:
        assert previous <= child.start and child.end <= part.end, (part, child)
        previous = child.end
        check_tree(child, size)


def without_header(message: bytes) -> bytes:
    """The message less its first X-MSYS-API field: what an untracked message becomes."""
    parsed = parse_message_file(message)
    fields = [f for f in parsed.fields if f.name.lower() == "x-msys-api"][:1]
    kept = [f.raw for f in parsed.fields if f not in fields]
    return b"".join(kept) + parsed.separator + parsed.body


def as_delivered(message: bytes) -> bytes:
    """The message as Postfix passes it on (checked with Postfix 3.7): blanks before a field's
    colon are dropped, and a blank line ends the header when the file has none (a line that
    is no field starts the body). This is what recipients' readers get to see."""
    parsed = parse_message_file(message)
    fields = [_BLANKS_BEFORE_COLON.sub(b"\\1:", f.raw, count=1) for f in parsed.fields]
    separator = parsed.separator or (parsed.eol if parsed.body else b"")
    return b"".join(fields) + separator + parsed.body


_BLANKS_BEFORE_COLON = re.compile(rb"\A([^:\s]+)[ \t]+:")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    prefix, pipeline = MODES.get(data[0] % 3)
    message = prefix + data[1:]
    parsed = parse_message_file(message)
    check_tree(mime.parse_structure(parsed.headers, parsed.body), len(parsed.body))
    try:
        result = run_message(pipeline, parsed.headers, parsed.body, RCPT, None)
    except SmtpReplyError as exc:
        # No policies here: the only reply is the header's 550 (limits included).
        assert (exc.reply.code, exc.reply.status) == ("550", "5.6.0"), exc.reply
        assert exc.reply.text.isascii() and exc.reply.text.isprintable(), exc.reply
        return
    copy = result.copies[0]
    out = parsed.to_bytes(result.header_edits + copy.header_edits, copy.body)
    email.message_from_bytes(out)
    if copy.body is None and not copy.header_edits:
        assert out == without_header(message), "untracked message changed"
    else:
        assert result.untracked is None, result.untracked
        settings = copy.settings
        clicks, opens = settings.click_tracking, settings.open_tracking
        judge(as_delivered(message), as_delivered(out), CODEC, clicks=clicks, opens=opens)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
