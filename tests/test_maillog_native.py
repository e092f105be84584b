"""The C walk of Postfix lines (_native/maillogline.c) against its references, the regular
expressions of maillog/lines.py (syslog prefix) and maillog/postfix.py (delivery fields):
on every line shape the tests and the benchmark use, on near-valid lines (valid ones with
characters changed, cut, doubled), on arbitrary bytes and text, and on hostile lengths."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.maillog import lines, postfix
from smtpapi_milter.maillog.postfix import PostfixParser
from tests import maillog_lines as pf

if os.environ.get("SMTPAPI_PURE_PYTHON") == "1":  # the references alone are under test
    pytest.skip("SMTPAPI_PURE_PYTHON=1: no native path to compare", allow_module_level=True)

native = lines._native
NOW = time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
WHEN = NOW - 3600


def classic_reference(raw: bytes) -> tuple[str, str, str, str] | None:
    match = lines._CLASSIC.match(raw.decode("utf-8", "replace"))
    if match is None:
        return None
    return (match.string[: match.end("s")], match["tag"], match["pid"] or "", match["text"])


def delivery_reference(text: str) -> tuple | None:
    match = postfix._DELIVERY.match(text)
    return None if match is None else match.groups()


def check_classic(raw: bytes) -> None:
    got, want = native.classic(raw), classic_reference(raw)
    if raw.isascii() and b"\n" not in raw:
        assert got == want
    else:  # handed to the expression
        assert got is None


def check_delivery(text: str) -> None:
    got, want = native.delivery(text), delivery_reference(text)
    if text.isascii() and "\n" not in text:
        assert got == want
    else:
        assert got is NotImplemented
    assert postfix.delivery_groups(text) == want


def check_line(raw: bytes) -> None:
    check_classic(raw)
    text = raw.decode("utf-8", "replace")
    check_delivery(text)
    parts = text.split(": ", 1)
    if len(parts) == 2:
        check_delivery(parts[1])  # the text after the prefix, as the parser sees it
    for now in (NOW, NOW - 400 * 86400):  # this year's stamps, and next year's
        assert lines.parse_syslog_bytes(raw, now) == lines.parse_syslog(text, now)


def shapes() -> list[str]:
    """One line of every shape tests/maillog_lines.py writes, and the log lines written out
    in the parser's tests."""
    qid, rcpt = "4F00000A", "reader1@example.org"
    made = [
        *pf.received(WHEN, qid, "s@example.com"),
        pf.sent(WHEN, qid, rcpt),
        pf.sent(WHEN, qid, rcpt, orig="Alias@Example.org"),
        pf.deferred(WHEN, qid, rcpt),
        pf.bounced(WHEN, qid, rcpt),
        pf.removed(WHEN, qid),
    ]
    for name in ("test_maillog_postfix.py", "test_maillog_follower.py"):
        tree = ast.parse((Path(__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):  # f-strings: the constant parts joined
                parts = [v.value if isinstance(v, ast.Constant) else "7" for v in node.values]
                node = ast.Constant("".join(parts))
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and "postfix" in value and "[" in value:
                made.append(value)
    return made


SHAPES = shapes()


def test_native_is_built_and_chosen():
    assert native is not None and postfix._native is native


def test_the_shapes_are_there():
    assert len(SHAPES) > 20
    assert sum(native.classic(s.encode()) is not None for s in SHAPES) > 15
    deliveries = [s.split(": ", 1)[1] for s in SHAPES if ": to=<" in s]
    assert sum(native.delivery(t) is not None for t in deliveries) > 10


@pytest.mark.parametrize("text", SHAPES)
def test_every_shape_matches_the_reference(text):
    check_line(text.encode())


def outcomes(raws: list[bytes]) -> list:
    parser = PostfixParser()  # one for all: TLS sessions and notices span lines
    parsed = [lines.parse_syslog_bytes(raw, NOW) for raw in raws]
    return [parser.feed_all(line) for line in parsed if line is not None]


def test_parser_outcomes_match_the_reference(monkeypatch):
    raws = [s.encode() for s in SHAPES]
    with_native = outcomes(raws)
    assert sum(map(len, with_native)) > 10
    monkeypatch.setattr(postfix, "_native", None)
    monkeypatch.setattr(lines, "_native", None)
    assert with_native == outcomes(raws)


# Near-valid lines: a real one with a few edits, each an operation at a place.
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace", "cut", "double"]),
        st.integers(0, 400),
        st.sampled_from(
            list(" \t\x0b\x1c\x1f:[]<>,().0123456789aZz-/=\n\r") + ["\xe9", "\u0663", "\xa0", "\0"]
        ),
    ),
    max_size=4,
)


def edited(text: str, edits: list[tuple[str, int, str]]) -> str:
    for op, at, char in edits:
        at = at % (len(text) + 1)
        if op == "delete":
            text = text[:at] + text[at + 1 :]
        elif op == "insert":
            text = text[:at] + char + text[at:]
        elif op == "replace":
            text = text[:at] + char + text[at + 1 :]
        elif op == "cut":
            text = text[:at]
        else:
            text = text[:at] + text[at : at + 8] + text[at:]
    return text


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(SHAPES), EDITS)
def test_near_valid_lines_match_the_reference(text, edits):
    check_line(edited(text, edits).encode("utf-8", "surrogatepass"))


FIELDS = st.text(alphabet=st.sampled_from(list("ab1.:,<> ()[]-_/=\t")), max_size=12)


@settings(max_examples=2000, deadline=None)
@given(
    st.tuples(*[FIELDS] * 10),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_delivery_fields_of_any_text_match_the_reference(f, orig, reuse, delays, reason):
    # The fields' own text varies; the separators are as Postfix writes them, or not.
    text = (
        f"{f[0]}: to=<{f[1]}>, "
        + (f"orig_to=<{f[2]}>, " if orig else "")
        + f"relay={f[3]}, "
        + (f"conn_use={f[4]}, " if reuse else "")
        + f"delay={f[5]}, "
        + (f"delays={f[6]}, " if delays else "")
        + f"dsn={f[7]}, status={f[8]}"
        + (f" ({f[9]})" if reason else f[9])
    )
    check_delivery(text)
    check_classic(f"Dec {f[0]} 12:00:00 {f[1]} {f[2]}[{f[3]}]: {text}".encode())


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_match_the_reference(raw):
    check_line(raw)
    check_line(b"Dec  4 15:39:09 h p[1]: " + raw)
    check_delivery("Q: to=<a>, relay=r, delay=1, dsn=2.0.0, status=" + raw.decode("latin-1"))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_matches_the_reference(text):
    check_delivery(text)
    check_line(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("size", [0, 1, 100_000, 3_000_000])
def test_hostile_lengths(size):
    for filler in ("a", " ", "(", ")", "<", "1", ","):
        body = filler * size
        for text in (
            pf.sent(WHEN, "Q", body),
            pf.bounced(WHEN, "Q", "r") + body,
            f"Dec 04 12:00:00 {body} postfix/smtp[1]: x",
            f"Dec 04 12:00:00 h postfix/smtp[{body}]: x",
            f"Dec 04 12:00:00 h {body}[1]: x",
        ):
            check_classic(text.encode())
            check_delivery(text.split(": ", 1)[-1])
