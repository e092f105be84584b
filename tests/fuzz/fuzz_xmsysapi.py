"""Fuzz the X-MSYS-API parser: any bytes give a valid parse or a documented 550 5.6.0.

Besides "no other exception", the reply must be usable on the wire (one line of printable
ASCII: libmilter passes it as a C string) and a valid parse must have the documented
types; resolving it into settings may only add the documented limit replies.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["smtpapi_milter"]):
    from smtpapi_milter import xmsysapi
    from smtpapi_milter.config import SmtpapiConfig
    from smtpapi_milter.envelope import decode_header_value
    from smtpapi_milter.replies import SmtpReplyError
    from smtpapi_milter.settings import TagRegistry, resolve

CONFIG = SmtpapiConfig()


def check_reply(exc: SmtpReplyError) -> None:
    reply = exc.reply
    assert (reply.code, reply.status) == ("550", "5.6.0"), reply
    assert reply.text.isascii() and reply.text.isprintable(), repr(reply.text)
    assert len(reply.text) <= 200, len(reply.text)


def check_parse(parsed: xmsysapi.XMsysApi) -> None:
    assert isinstance(parsed.raw, dict)
    assert parsed.campaign_id is None or isinstance(parsed.campaign_id, str)
    assert parsed.metadata is None or isinstance(parsed.metadata, dict)
    assert parsed.tags is None or all(isinstance(t, str) for t in parsed.tags)
    for flag in (parsed.open_tracking, parsed.click_tracking):
        assert flag is None or isinstance(flag, bool)


def test_one_input(data: bytes) -> None:
    decode_header_value(data)  # what policies read: must never raise
    try:
        parsed = xmsysapi.parse(data)
    except SmtpReplyError as exc:
        check_reply(exc)
        return
    check_parse(parsed)
    try:
        resolve(CONFIG, parsed, {}, TagRegistry())
    except SmtpReplyError as exc:
        check_reply(exc)
        assert "is limited to" in exc.reply.text, exc.reply.text


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
