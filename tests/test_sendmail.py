"""The milter inside a real Sendmail 8.17, configured with the shipped .mc snippet (SPEC 10).

Each test is one run of ``tests/harness/sendmail_driver.py`` in a private namespace (our
milter, Sendmail, a capture server); the test judges what the client saw and what arrived,
exactly as the Postfix tests do. Needs root; a machine that cannot run Sendmail fails here,
it never skips (the Makefile installs and fetches what is needed).
"""

from __future__ import annotations

import json
import re

from smtpapi_milter.bounces_in.return_path import ReturnPaths
from smtpapi_milter.config import load_config
from smtpapi_milter.events.store import open_store
from smtpapi_milter.ids import message_id
from smtpapi_milter.tokens import TokenCodec

from . import corpus
from .harness.sendmail import DAEMON_NAME, NamespaceRun, Outgoing, run_in_namespace
from .oracle import TRACKED, judge
from .test_milter_postfix import FOLDED, HTML, REJECTIONS, html_of, without_received

# No options in the header: only the {daemon_name} listener settings turn tracking on.
CAMPAIGN_ONLY = b'X-MSYS-API: {"campaign_id": "by-listener"}'
RECEIVED_ID = re.compile(rb"\AReceived: .*?with ESMTP id (\w+)", re.S)
ACCEPTED_ID = re.compile(r"2\.0\.0 (\w+) Message accepted for delivery")


def codec_of(run: NamespaceRun) -> TokenCodec:
    return TokenCodec.from_config(load_config(str(run.milter_config)), create=False)


def in_sending_order(run: NamespaceRun) -> list[bytes]:
    """Delivered messages in the order they were sent (Sendmail delivers in the background,
    so arrival order is not sending order): the queue id in the 250 reply names each."""
    by_id = {RECEIVED_ID.match(d["data"]).group(1).decode(): d["data"] for d in run.delivered}
    assert len(by_id) == len(run.delivered)
    return [by_id[ACCEPTED_ID.match(o.text).group(1)] for o in run.outcomes if o.accepted]


def test_tracked_delivery_through_sendmail(tmp_path):
    folded = corpus.wrap_html(HTML, "quoted-printable", FOLDED)
    by_listener = corpus.wrap_html(HTML, "base64", CAMPAIGN_ONLY)
    listener = {"open_tracking_enabled": True, "click_tracking_enabled": True}
    run = run_in_namespace(
        tmp_path,
        [Outgoing(folded), Outgoing(by_listener)],
        milter={f"smtpapi.listener.{DAEMON_NAME}": listener},
    )
    assert [o.accepted for o in run.outcomes] == [True, True], run.outcomes
    first, second = in_sending_order(run)
    codec = codec_of(run)

    report = judge(folded, without_received(first), codec)
    assert (report.html_links, report.pixels) == (2, 1)
    assert b"X-MSYS-API" not in first
    token = codec.decode(TRACKED.search(html_of(first)).group(1))
    assert (token.campaign_id, token.tags, token.rcpt_to) == (
        "folded",
        ("t1",),
        "jane.doe@example.org",
    )

    # Tracked only because Sendmail passed {daemon_name} and our listener table matched it.
    report = judge(by_listener, without_received(second), codec)
    assert (report.html_links, report.pixels) == (2, 1)
    assert codec.decode(TRACKED.search(html_of(second)).group(1)).campaign_id == "by-listener"

    # Sendmail passed the queue id (macro i): the milter logged each one it accepted.
    logged = {json.loads(line).get("queue_id") for line in run.milter_log.splitlines()}
    assert {ACCEPTED_ID.match(o.text).group(1) for o in run.outcomes} <= logged


def test_rejections_reach_the_client_verbatim(tmp_path):
    messages = [Outgoing(corpus.wrap_html(HTML, "8bit", header)) for header, _ in REJECTIONS]
    good = corpus.wrap_html(HTML, "8bit", b'X-MSYS-API: {"campaign_id": "ok"}')
    untouched = corpus.wrap_html(HTML, "quoted-printable", b"")
    run = run_in_namespace(tmp_path, [*messages, Outgoing(good), Outgoing(untouched)])
    rejected = run.outcomes[: len(REJECTIONS)]
    for outcome, (header, text) in zip(rejected, REJECTIONS, strict=True):
        assert (outcome.accepted, outcome.code) == (False, 550), (header, outcome)
        assert outcome.text.startswith(text), (header, outcome.text)
    delivered_good, delivered_untouched = in_sending_order(run)
    # Tracking is off by default: the header goes, every other byte stays.
    assert without_received(delivered_good) == good.replace(
        b'X-MSYS-API: {"campaign_id": "ok"}\r\n', b""
    )
    assert without_received(delivered_untouched) == untouched


def test_events_name_sendmails_queue_id_and_its_refusals(tmp_path):
    tracked = b'X-MSYS-API: {"campaign_id": "ids", "options": {"open_tracking": true}}'
    messages = [Outgoing(corpus.wrap_html(HTML, "8bit", tracked))]
    messages.append(Outgoing(corpus.wrap_html(HTML, "8bit", REJECTIONS[0][0])))
    run = run_in_namespace(tmp_path, messages)
    accepted, rejected = run.outcomes
    store = open_store(load_config(str(run.milter_config)).event_store_url)
    try:
        (injection,) = store.query(types=["injection"])
        (rejection,) = store.query(types=["policy_rejection"])
    finally:
        store.close()
    # Sendmail's macro i at end of message: the id it answered with and wrote in Received.
    queue_id = ACCEPTED_ID.match(accepted.text).group(1)
    (delivered,) = run.delivered
    assert (
        injection["mta_queue_id"]
        == queue_id
        == RECEIVED_ID.match(delivered["data"]).group(1).decode()
    )
    assert rejection["raw_reason"] == f"{rejected.code} {rejected.text}"
    assert rejection["raw_reason"].startswith("550 " + REJECTIONS[0][1])
    assert rejection["mta_queue_id"] and rejection["rcpt_to"] == injection["rcpt_to"]


def test_sendmail_delivers_with_the_return_path_at_bounce_domain(tmp_path):
    """Sendmail applies the milter's chgfrom (SMFIF_CHGFROM): the copy leaves with a return
    path at bounce_domain whose token names its message, the sender's own kept in msg_from."""
    tracked = corpus.wrap_html(HTML, "8bit", FOLDED)
    run = run_in_namespace(
        tmp_path, [Outgoing(tracked)], milter={"smtpapi": {"bounce_domain": "bounces.example"}}
    )
    assert [o.accepted for o in run.outcomes] == [True], run.outcomes
    (delivered,) = run.delivered
    local, _, domain = delivered["mail_from"].strip("<>").partition("@")
    token = ReturnPaths.from_codec(codec_of(run)).verify(local)
    assert domain == "bounces.example" and not token.shared
    config = load_config(str(run.milter_config))
    store = open_store(config.event_store_url)
    try:
        (injection,) = store.query(types=["injection"])
    finally:
        store.close()
    assert injection["message_id"] == message_id(token.transmission_id, token.index)
    assert injection["msg_from"] == "news@example.com"
