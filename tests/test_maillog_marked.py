"""The follower's fast way through a file (blocks read whole, lines without a parser's marker
never parsed: maillog/marked.py) against the full way (every line parsed), on every line
shape the tests know and on made-up lines: the same outcomes, in the same order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.maillog.file_source import FileSource
from smtpapi_milter.maillog.lines import parse_syslog
from smtpapi_milter.maillog.marked import marked_lines
from smtpapi_milter.maillog.postfix import PostfixParser
from smtpapi_milter.maillog.sendmail import SendmailParser

from . import maillog_lines as pf
from .test_maillog_postfix import NOW, OURS_SENT, TLS, gmail
from .test_maillog_sendmail import OURS_BOUNCED, OURS_DEFERRED

WHEN = NOW - 3600
QID = "4F0001A2"

# Every line shape of tests/maillog_lines.py (the bench's log is made of these), and the
# other real shapes the parsers' tests quote: TLS, a reused connection, expiry, notices,
# RFC 3339 stamps, Sendmail's lines.
SHAPES = [
    pf.line(WHEN, "smtpd", 10650, "connect from localhost[127.0.0.1]"),
    *pf.received(WHEN, QID, "news@example.com"),
    pf.line(WHEN, "smtpd", 10650, "disconnect from localhost[127.0.0.1] ehlo=1 quit=1"),
    pf.sent(WHEN, QID, "reader@example.org"),
    pf.sent(WHEN, QID, "reader@example.org", orig="Reader@Example.org"),
    pf.deferred(WHEN, QID, "reader@example.org"),
    pf.sent(WHEN + 60, QID, "reader@example.org"),
    pf.bounced(WHEN, QID, "reader@example.org"),
    pf.removed(WHEN, QID),
    OURS_SENT,
    TLS,
    gmail(12345),
    gmail(777, "conn_use=2, "),
    "Dec 28 13:39:28 mx postfix/qmgr[22753]: C93CEB08A046: from=<ina@somedomain.com>, "
    "status=expired, returned to sender",
    "Dec 28 13:39:28 mx postfix/bounce[19155]: C93CEB08A046: sender non-delivery "
    "notification: B1B894562003",
    "Dec 28 13:39:29 mx postfix/smtp[19211]: B1B894562003: to=<ina@somedomain.com>, "
    "relay=mx.somedomain.com[198.51.100.4]:25, delay=0.9, delays=0/0/0.4/0.5, "
    "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 77F1A2)",
    "Oct 10 13:22:49 host postfix/error[1707]: A323688C523: to=<d76@example.test>, "
    "relay=none, delay=432000, delays=432000/0/0/0, dsn=4.4.1, status=expired, returned "
    "to sender",
    "2026-12-04T15:39:09.123456+00:00 mta postfix/smtp[10655]: 0CF9720C347: "
    "to=<b@example.org>, relay=127.0.0.1[127.0.0.1]:42205, delay=0.05, "
    "delays=0.04/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 OK: captured)",
    OURS_DEFERRED,
    OURS_BOUNCED,
    "not a syslog line at all: to=<x@example.org>",
    "",
]
PARSERS = [PostfixParser, SendmailParser]


def full_way(parser_class, lines: list[str]) -> list:
    """Every line parsed, as the follower did before marked.py."""
    parser = parser_class()
    found = []
    for raw in lines:
        line = parse_syslog(raw, NOW)
        if line is not None:
            found += parser.feed_all(line)
    return found


def fast_way(parser_class, blocks: list[bytes]) -> list:
    """As the follower reads a file now: marked lines only."""
    parser = parser_class()
    found = []
    for raw in marked_lines(blocks, parser_class.MARKERS):
        line = parse_syslog(raw.decode("utf-8", "replace"), NOW)
        if line is not None:
            found += parser.feed_all(line)
    return found


def blocks_of(lines: list[bytes], cuts: list[int]) -> list[bytes]:
    """``lines`` in blocks as FileSource gives them, cut before the given indexes."""
    edges = sorted({0, len(lines), *(c % (len(lines) + 1) for c in cuts)})
    return [b"\n".join(lines[a:b]) for a, b in zip(edges, edges[1:], strict=False) if b > a]


@pytest.mark.parametrize("parser_class", PARSERS)
def test_every_shape_alone_gives_the_same_both_ways(parser_class):
    for raw in SHAPES:
        assert fast_way(parser_class, [raw.encode()]) == full_way(parser_class, [raw]), raw


@pytest.mark.parametrize("parser_class", PARSERS)
def test_all_shapes_in_one_block_give_the_same_outcomes_both_ways(parser_class):
    # Not vacuous: the delivery lines of both MTAs are kept and give outcomes.
    found = fast_way(parser_class, [b"\n".join(raw.encode() for raw in SHAPES)])
    assert found == full_way(parser_class, SHAPES)
    assert len(found) >= 2


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PARSERS),
    st.lists(
        st.one_of(
            st.sampled_from(SHAPES),
            st.text(st.characters(blacklist_characters="\n"), max_size=80),
        ),
        max_size=40,
    ),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_any_log_in_any_blocks_gives_the_same_both_ways(parser_class, lines, cuts):
    blocks = blocks_of([raw.encode("utf-8", "surrogatepass") for raw in lines], cuts)
    texts = [raw.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for raw in lines]
    assert fast_way(parser_class, blocks) == full_way(parser_class, texts)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    st.lists(st.integers(min_value=0, max_value=40), max_size=5),
    st.lists(st.one_of(st.sampled_from(PostfixParser.MARKERS), st.binary(max_size=4)), max_size=4),
)
def test_marked_lines_are_the_lines_holding_a_marker(lines, cuts, markers):
    # Arbitrary markers too: empty ones and ones with a newline take the per-line way.
    expected = [line for line in lines if any(marker in line for marker in markers)]
    assert marked_lines(blocks_of(lines, cuts), markers) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    st.integers(min_value=1, max_value=12),
    st.booleans(),
)
def test_file_blocks_hold_every_line_once_within_the_limit(tmp_path_factory, lines, limit, torn):
    log = tmp_path_factory.mktemp("blocks") / "maillog"
    complete = b"".join(line + b"\n" for line in lines)
    log.write_bytes(complete + (b"a torn last line" if torn else b""))
    source = FileSource(log, None)
    read, sizes, position = [], [], None
    while True:
        blocks, where = source.read_blocks(limit)
        if where is None:
            break
        batch = [line for block in blocks for line in block.split(b"\n")]
        read += batch
        sizes.append(len(batch))
        position = where
    source.close()
    assert read == lines
    assert all(size == limit for size in sizes[:-1]) and all(0 < s <= limit for s in sizes)
    assert (position.offset if position else 0) == len(complete)
