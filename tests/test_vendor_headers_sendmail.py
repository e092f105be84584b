"""Other vendors' headers through the milter inside a real Sendmail 8.17 (SPEC 15): repeated
fields (two X-Mailgun-Tag, two X-Mailgun-Variables) are deleted by Sendmail's own reading of
libmilter's header indexes, and each family's message is tracked as its headers ask."""

from __future__ import annotations

from smtpapi_milter.vendor_headers import FAMILY_NAMES

from . import vendor_examples as examples
from .harness.sendmail import Outgoing, run_in_namespace
from .oracle import judge
from .test_milter_postfix import without_received
from .test_sendmail import codec_of, in_sending_order


def test_one_message_per_family_tracked_and_its_headers_removed(tmp_path):
    families = sorted(examples.FAMILIES)
    sent = [examples.message(family) for family in families]
    run = run_in_namespace(
        tmp_path,
        [Outgoing(message) for message in sent],
        milter={"smtpapi": {"accept_headers": list(FAMILY_NAMES)}},
    )
    assert [o.accepted for o in run.outcomes] == [True] * len(families), run.outcomes
    codec = codec_of(run)
    for family, message, delivered in zip(families, sent, in_sending_order(run), strict=True):
        data = without_received(delivered)
        expected = examples.without_vendor_fields(message)
        assert examples.header_block(data) == examples.header_block(expected), family
        report = judge(expected, data, codec)
        assert (report.html_links, report.text_links, report.pixels) == (2, 2, 1), family
