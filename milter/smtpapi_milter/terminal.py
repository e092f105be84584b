"""Text that came from outside (mail headers, links, readers' clients) printed for people.

A campaign id, a subject or a link is whatever a sender or a reader's client made it, and a
terminal obeys the control characters in what it prints: ESC sequences move the cursor,
rewrite earlier lines, retitle the window or, on some terminals, answer back into the shell;
bidi overrides make text read in another order than it is stored. Table output for people
shows each such character as a visible escape (``\\x1b``, ``\\u202e``) instead; JSON output
stays JSON, with the characters JSON allows raw but terminals obey written as ``\\u`` escapes
(the same value for every JSON reader).
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (U+009B is a one-character CSI on some terminals), and the
# bidi marks, embeddings, overrides and isolates (Trojan Source, CVE-2021-42574).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_TEXT = re.compile(f"[{_UNSAFE}]")
# In JSON text C0 controls are already escaped (json.dumps), and every other character of
# these can only stand inside a string, where \\uXXXX means the same character.
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with every control and bidi character shown as an escape: ESC is ``\\x1b``."""
    return _UNSAFE_TEXT.sub(_escape, text)


def terminal_json(json_text: str) -> str:
    """JSON text (from json.dumps) that a terminal shows as written: the same JSON value."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
