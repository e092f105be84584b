"""A tracked message never outgrows the MTA's size limit (``[smtpapi] mta_message_size_limit``).

Found on a stranger's server: a 6.6 MB link-heavy newsletter was tracked, its injection event
stored, and then Postfix refused the grown message (552 5.3.4 message file too big). Now a
copy whose tracked form would not fit goes out untracked, with no injection event.
"""

from __future__ import annotations

import smtplib

import pytest

from smtpapi_milter.config import load_config
from smtpapi_milter.events.store import open_store
from smtpapi_milter.message_file import parse_message_file
from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.sandbox.postfix import PrivatePostfix
from smtpapi_milter.untracked import Reason

from . import corpus
from .harness.smtpapi import RunningMilter
from .test_pipeline import pipeline, single

RCPT = "jane@example.org"
LIMIT = 300_000  # on the private Postfix and in the milter alike


def link_dense(links: int) -> str:
    """A newsletter of short links: tracking multiplies its size (each URL becomes ~150)."""
    items = "".join(f'<p><a href="https://example.com/p/{i}">{i}</a></p>\r\n' for i in range(links))
    return f"<html><body>\r\n{items}</body></html>\r\n"


def run(message: bytes, **smtpapi):
    parsed = parse_message_file(message)
    session = pipeline(**smtpapi).session()
    session.mail_from("news@example.com")
    session.rcpt(RCPT)
    return session.end_of_message(parsed.headers, parsed.body)


def test_estimate_leaves_a_clearly_too_big_copy_untracked_without_rewriting():
    message = single(link_dense(1800))  # ~95 KB, ~380 KB tracked
    result = run(message, mta_message_size_limit=LIMIT)
    copy = result.copies[0]
    assert result.untracked.reason is Reason.OVER_MTA_LIMIT
    assert result.untracked.detail.startswith("about ")  # the estimate decided
    assert (copy.body, copy.injection, copy.stats.html_links) == (None, None, 0)
    assert [e.name for e in result.header_edits] == ["X-MSYS-API"]  # removed as always


def test_exact_size_decides_when_the_estimate_is_not_worth_it():
    # Under a quarter of the limit the estimate is skipped; the tracked body is measured.
    # ~46 KB of the shortest links there are, ~310 KB tracked: more than fourfold.
    message = single("".join(f'<a href="http://e.x/{i}">.</a>' for i in range(1500)))
    limit = 4 * len(message) + 10_000
    result = run(message, mta_message_size_limit=limit)
    assert result.untracked.reason is Reason.OVER_MTA_LIMIT
    assert result.untracked.detail.endswith(f"bytes tracked, limit {limit}")
    assert not result.untracked.detail.startswith("about ")
    assert (result.copies[0].body, result.copies[0].injection) == (None, None)


def test_a_message_already_over_the_limit_is_not_even_analysed():
    message = single(link_dense(100))
    result = run(message, mta_message_size_limit=len(message) // 2)
    assert result.untracked.reason is Reason.OVER_MTA_LIMIT
    assert result.analysis is None and result.untracked.detail.startswith("already ")


@pytest.mark.parametrize("limit", [0, 10 * LIMIT])
def test_no_limit_or_room_enough_tracks_every_link(limit):
    result = run(single(link_dense(1800)), mta_message_size_limit=limit)
    assert result.untracked is None and result.links_tracked == 1800
    assert result.copies[0].injection is not None


def test_postfix_with_a_small_message_size_limit_delivers_untracked_not_refused(tmp_path):
    """Through a real Postfix with message_size_limit = LIMIT: before the fix the milter
    grew the message past it, Postfix answered 552 5.3.4 and the injection event stayed."""
    dense = corpus.wrap_html(link_dense(1800).encode(), "8bit")
    small = corpus.wrap_html(link_dense(3).encode(), "8bit")
    milter = RunningMilter(tmp_path, smtpapi={"mta_message_size_limit": LIMIT})
    with (
        CaptureServer() as capture,
        milter,
        PrivatePostfix(
            smtpd_milters=milter.socket,
            relay_port=capture.port,
            extra_main_cf={"message_size_limit": str(LIMIT)},
        ) as postfix,
    ):
        for message in (dense, small):
            with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
                assert client.sendmail("news@example.com", [RCPT], message) == {}
        delivered = sorted(capture.wait_for(2, timeout=30), key=lambda m: len(m.data))
        lines = milter.wait_for_log("message", count=2)
    big, tracked = delivered[1].data, delivered[0].data
    assert b"X-MSYS-API" not in big and b'href="https://example.com/p/1799"' in big
    assert b"/c/" in tracked  # the small one is tracked as usual
    assert [line["untracked"] for line in lines] == ["over_mta_limit", None]
    store = open_store(load_config(str(milter.config_path)).event_store_url)
    try:
        injections = store.query(types=["injection"])
    finally:
        store.close()
    assert len(injections) == 1  # only the tracked one: none claims the untracked one
