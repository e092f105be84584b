"""Other vendors' headers through the milter inside a real Postfix (SPEC 15): one message per
family, tracked as its headers ask, delivered without them and otherwise byte for byte; a
message with two vendors' headers refused with the reply naming both."""

from __future__ import annotations

import smtplib

import pytest

from smtpapi_milter.sandbox.capture import CaptureServer
from smtpapi_milter.vendor_headers import FAMILY_NAMES

from . import vendor_examples as examples
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED, judge
from .test_milter_postfix import codec_of, mta, send, without_received


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def test_one_message_per_family_tracked_and_its_headers_removed(tmp_path, capture):
    milter = RunningMilter(tmp_path, smtpapi={"accept_headers": list(FAMILY_NAMES)})
    families = sorted(examples.FAMILIES)
    with milter, mta(milter, capture) as postfix:
        for family in families:
            message = examples.message(family).replace(
                b"<corpus.1@example.com>", f"<{family}@example.com>".encode()
            )
            send(postfix.smtp_port, message)
        delivered = capture.wait_for(len(families), timeout=60)
        codec = codec_of(milter)
        logged = milter.wait_for_log("message", count=len(families))
        assert sorted(line["vendor_headers"] for line in logged) == families
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(
                postfix.smtp_port,
                examples.message("mailgun").replace(
                    b"X-Mailgun-Track: yes", b"X-PM-TrackOpens: true"
                ),
            )
    assert info.value.smtp_code == 550
    assert info.value.smtp_error.decode() == (
        "5.6.0 message has headers of two vendors, X-Mailgun-Tag and X-PM-TrackOpens: "
        "use one vendor's headers"
    )
    by_family = {}
    for copy in delivered:
        data = without_received(copy.data)
        family = next(f for f in families if f"<{f}@example.com>".encode() in data)
        by_family[family] = data
    assert sorted(by_family) == families
    for family, data in by_family.items():
        sent = examples.message(family).replace(
            b"<corpus.1@example.com>", f"<{family}@example.com>".encode()
        )
        assert examples.header_block(data) == examples.header_block(
            examples.without_vendor_fields(sent)
        ), family
        report = judge(examples.without_vendor_fields(sent), data, codec)
        assert (report.html_links, report.text_links, report.pixels) == (2, 2, 1), family
        tags, metadata = examples.FAMILIES[family][1]
        for token in TRACKED.findall(data.replace(b"=\r\n", b"").decode()):
            tracked = codec.decode(token)
            assert (tracked.tags, tracked.metadata) == (tags, metadata), family
