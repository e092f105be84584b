"""Messages as files on disk: what ``smtpapi-milter rewrite`` reads and writes.

An MTA hands the milter header fields and a body separately; a file holds both. We split a
file the same way, keep each header field's exact bytes, and put the file back together
with only the requested header edits, so the CLI shows exactly what the milter would do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .envelope import HeaderEdit

# A field name is printable ASCII (RFC 5322); Postfix also allows blanks before the colon.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:.*(?:\r?\n[ \t].*)*(?:\r?\n|$)")
_MBOX_FROM = re.compile(rb"From (?![ \t]*:)[^\r\n]*\r?\n")


@dataclass
class HeaderField:
    name: str
    value: bytes  # raw value after the colon, folds kept, final line break dropped
    raw: bytes  # the whole field as it was in the file


@dataclass
class MessageFile:
    fields: list[HeaderField]
    separator: bytes  # the blank line between header and body ("" if there is no body)
    body: bytes
    eol: bytes

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """Header (name, raw value) pairs as pymilter delivers them."""
        return [(f.name, f.value) for f in self.fields]

    def to_bytes(self, edits: list[HeaderEdit], body: bytes | None = None) -> bytes:
        separator = self.separator
        if body is not None and not separator:
            # The file's body began right after a field (a line that is no field); the MTA
            # puts a blank line there, and a new body must not start looking like a header.
            separator = self.eol
        return (
            b"".join(self._header_bytes(edits)) + separator + (self.body if body is None else body)
        )

    def _header_bytes(self, edits: list[HeaderEdit]) -> list[bytes]:
        pending = {(e.name.lower(), e.index): e for e in edits if e.index > 0}
        seen: dict[str, int] = {}
        out = []
        for f in self.fields:
            key = f.name.lower()
            seen[key] = seen.get(key, 0) + 1
            edit = pending.get((key, seen[key]))
            if edit is None:
                out.append(f.raw)
            elif edit.value is not None:
                out.append(f.name.encode("latin-1") + b": " + self._lines(edit.value) + self.eol)
        for e in edits:
            if e.index == 0 and e.value is not None:
                out.append(e.name.encode("latin-1") + b": " + self._lines(e.value) + self.eol)
        return out

    def _lines(self, value: bytes) -> bytes:
        """A folded edit value ("\n" + blank, as libmilter takes it) in this file's line ends."""
        if b"\n" not in value or self.eol == b"\n":
            return value
        return value.replace(b"\r\n", b"\n").replace(b"\n", self.eol)


def parse_message_file(data: bytes) -> MessageFile:
    """Split a message file into header fields and body.

    An mbox ``From `` envelope line is dropped: it never travels over SMTP. Lines that are
    not header fields end the header (as an MTA would treat them as body).
    """
    m = _MBOX_FROM.match(data)
    if m:
        data = data[m.end() :]
    eol = b"\n" if b"\r\n" not in data[:4096] and b"\n" in data[:4096] else b"\r\n"
    fields = []
    pos = 0
    while pos < len(data):
        m = _FIELD.match(data, pos)
        if not m:
            break
        raw = m.group(0)
        name, _, value = raw.partition(b":")
        fields.append(HeaderField(name.strip().decode("latin-1"), _strip_eol(value), raw))
        pos = m.end()
    if data.startswith(b"\r\n", pos):
        sep_len = 2
    elif data.startswith(b"\n", pos):
        sep_len = 1
    else:
        sep_len = 0
    return MessageFile(fields, data[pos : pos + sep_len], data[pos + sep_len :], eol)


def _strip_eol(value: bytes) -> bytes:
    if value.endswith(b"\r\n"):
        return value[:-2]
    if value.endswith(b"\n"):
        return value[:-1]
    return value
