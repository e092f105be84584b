"""Real bounces, complaints and auto-replies from public test suites, classified (SPEC 13).

The messages are in tests/data/bounces/ (sources, commits and licenses in its README.md):
GNU Mailman's flufl.bounce test data (RFC 3464 DSNs and the home-made formats of qmail, Exim,
Postfix before DSNs, AOL, GroupWise, Yahoo, ...) and sisimai's set-of-emails (RFC 5965 ARF
reports, RFC 3834 auto-replies, DSNs and non-DSN bounces of today's providers). Each is
classified as bounce-in classifies it: its kind, and each failed recipient with its class;
ARF reports with their feedback type and reporter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpapi_milter.bounces_in.classify import classify
from smtpapi_milter.bounces_in.events import build_events, from_sending_mta
from smtpapi_milter.bounces_in.return_path import ReturnPathToken
from smtpapi_milter.bounces_in.suppress import suppression_rows
from smtpapi_milter.delivery.bounce_class import BounceClassifier

DATA = Path(__file__).parent / "data" / "bounces"
CLASSIFIER = BounceClassifier.load()

# file: (kind, ((recipient, bounce class), ...)) or ("arf", feedback type, reported by)
EXPECTED = {
    "flufl/aol_01.txt": ("bounce", (("screenname@aol.com", 40),)),
    "flufl/dsn_01.txt": ("dsn", (("jimmymcegypt@go.com", 40),)),
    "flufl/dsn_02.txt": ("bounce", (("zzzzz@zeus.hud.ac.uk", 24),)),
    "flufl/dsn_03.txt": ("dsn", (("ddd.kkk@advalvas.be", 40),)),
    "flufl/dsn_04.txt": ("dsn", (("max.haas@unibas.ch", 40),)),
    "flufl/dsn_05.txt": ("dsn", (("pkocmid@atlas.cz", 24),)),
    "flufl/dsn_06.txt": ("dsn", (("hao-nghi.au@fr.thalesgroup.com", 24),)),
    "flufl/exim_01.txt": ("bounce", (("delangen@its.tudelft.nl", 10),)),
    "flufl/groupwise_01.txt": ("bounce", (("thoff@mainex1.asu.edu", 40),)),
    "flufl/hotpop_01.txt": ("bounce", (("allensmithee@hotpop.com", 22),)),
    "flufl/llnl_01.txt": ("bounce", (("trotts1@llnl.gov", 40),)),
    "flufl/microsoft_01.txt": ("bounce", (("djbennett@ikon.com", 40),)),
    "flufl/netscape_01.txt": ("bounce", (("aaaaa@corel.com", 40), ("bbbbb@corel.com", 40))),
    "flufl/newmailru_01.txt": ("bounce", (("zzzzz@newmail.ru", 40),)),
    "flufl/postfix_01.txt": ("bounce", (("xxxxx@local.ie", 10),)),
    "flufl/postfix_02.txt": ("bounce", (("yyyyy@digicool.com", 21),)),
    "flufl/postfix_03.txt": ("bounce", (("ttttt@ggggg.com", 40),)),
    "flufl/qmail_01.txt": ("bounce", (("psadisc@wwwmail.n-h.de", 40),)),
    "flufl/qmail_02.txt": ("bounce", (("rauschlo@frontfin.com", 40),)),
    "flufl/qmail_03.txt": ("bounce", (("crown@hbc.co.jp", 10),)),
    "flufl/sendmail_01.txt": ("bounce", (("zzzzz@nfg.nl", 40), ("zzzzz@shaft.coal.nl", 40))),
    "flufl/simple_01.txt": ("bounce", (("bbbsss@turbosport.com", 40),)),
    "flufl/simple_02.txt": ("bounce", (("chris.ggggmmmm@usa.net", 40),)),
    "flufl/simple_03.txt": ("bounce", (("jacobus@geo.co.za", 70),)),
    "flufl/simple_04.txt": ("bounce", (("claird@starbase.neosoft.com", 21),)),
    "flufl/simple_05.txt": ("bounce", (("rlosardo@sbcglobal.net", 40),)),
    "flufl/yahoo_01.txt": ("bounce", (("subscribe.motorcycles@listsociety.com", 24),)),
    "flufl/yahoo_02.txt": ("bounce", (("agarciamartiartu@yahoo.es", 22),)),
    "sisimai/arf-01.eml": ("arf", "abuse", "example.co.jp"),
    "sisimai/arf-02.eml": ("arf", "abuse", "arf.mail.yahoo.com"),
    "sisimai/arf-11.eml": ("arf", "abuse", "example.com"),
    "sisimai/arf-12.eml": ("arf", "opt-out", "example.com"),
    "sisimai/arf-14.eml": ("arf", "abuse", "email-abuse.amazonses.com"),
    "sisimai/arf-15.eml": ("arf", "abuse", "feedback.example.org"),
    "sisimai/arf-16.eml": ("arf", "abuse", "feedback.example.com"),
    "sisimai/arf-17.eml": ("arf", "abuse", "example.org"),
    "sisimai/lhost-exim-01.eml": ("bounce", (("kijitora@example.ed.jp", 50),)),
    "sisimai/lhost-gmail-01.eml": ("bounce", (("userunknown@example.jp", 10),)),
    "sisimai/lhost-office365-01.eml": ("bounce", (("", 10),)),
    "sisimai/lhost-postfix-01.eml": ("dsn", (("kijitora@example.org", 10),)),
    "sisimai/lhost-qmail-01.eml": ("bounce", (("kijitora@example.ne.jp", 10),)),
    "sisimai/lhost-sendmail-01.eml": ("dsn", (("userunknown@bouncehammer.jp", 10),)),
    "sisimai/lhost-yahoo-01.eml": ("bounce", (("kijitora@example.org", 10),)),
    "sisimai/rfc3464-01.eml": ("dsn", (("userunknown@bouncehammer.jp", 10),)),
    "sisimai/rfc3464-03.eml": ("dsn", (("kijitora@example.com", 50),)),
    "sisimai/rfc3834-01.eml": ("auto_reply", (("", 60),)),
    "sisimai/rfc3834-02.eml": ("auto_reply", (("", 60),)),
    "sisimai/rfc3834-03.eml": ("auto_reply", (("", 60),)),
    "sisimai/rfc3834-04.eml": ("auto_reply", (("", 60),)),
    "sisimai/rfc3834-05.eml": ("auto_reply", (("", 60),)),
    "sisimai/rfc3834-06.eml": ("auto_reply", (("", 60),)),
}


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_the_corpus_is_all_here_and_large_enough():
    files = {f"{p.parent.name}/{p.name}" for p in DATA.glob("*/*.*")}
    assert files == set(EXPECTED) and len(files) >= 40
    kinds = {expected[0] for expected in EXPECTED.values()}
    assert kinds == {"dsn", "bounce", "arf", "auto_reply"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classified(name):
    report = classify(read(name), CLASSIFIER)
    expected = EXPECTED[name]
    assert report.kind == expected[0]
    if report.kind == "arf":
        assert (report.feedback_type, report.report_by) == expected[1:]
    else:
        found = tuple((f.recipient.lower(), f.bounce_class) for f in report.failures)
        assert found == expected[1]


SHARED = ReturnPathToken("123456789012345", 0, True)  # the report names the recipient


def events_of(name: str) -> list[dict]:
    report = classify(read(name), CLASSIFIER)
    return build_events(report, SHARED, None, 1700000000, name)


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e[0] == "auto_reply"])
def test_auto_replies_never_suppress_even_if_class_60_is_listed(name):
    events = events_of(name)
    for event in events:
        event["rcpt_to"] = "reader@example.org"  # as a per-recipient copy's injection gives
    assert [e["bounce_class"] for e in events] == ["60"]
    assert suppression_rows(events, {10, 30, 60}, 1700000000) == []


def test_hard_bounces_suppress_both_types_and_complaints_non_transactional():
    hard = suppression_rows(events_of("sisimai/rfc3464-01.eml"), {10, 30}, 1700000000)
    assert sorted((row[0], row[1], row[2]) for row in hard) == [
        ("userunknown@bouncehammer.jp", "non_transactional", "bounce"),
        ("userunknown@bouncehammer.jp", "transactional", "bounce"),
    ]
    soft = suppression_rows(events_of("flufl/dsn_05.txt"), {10, 30}, 1700000000)
    assert soft == []  # delayed, class 24: no suppression
    complaint = suppression_rows(events_of("sisimai/arf-16.eml"), {10, 30}, 1700000000)
    assert [(row[0], row[1], row[2]) for row in complaint] == [
        ("sabineko@example.com", "non_transactional", "spam_complaint")
    ]


def test_a_redacted_complaint_names_nobody():
    report = classify(read("sisimai/arf-11.eml"), CLASSIFIER)  # Original-Rcpt-To: Undisclosed
    assert report.kind == "arf" and report.complained_about == ""


def test_out_of_band_fields_are_sparkposts():
    (event,) = events_of("sisimai/lhost-sendmail-01.eml")
    assert event["type"] == "out_of_band" and event["error_code"] == "550"
    assert event["raw_reason"].startswith("550 5.1.1") and "userunknown@" not in event["reason"]
    assert event["routing_domain"] == "bouncehammer.jp" and event["bounce_class"] == "10"
    (complaint,) = events_of("sisimai/arf-02.eml")
    assert (complaint["type"], complaint["fbtype"], complaint["user_agent"]) == (
        "spam_complaint",
        "abuse",
        "Yahoo!-Mail-Feedback/1.0",
    )


def test_the_sending_mtas_own_dsn_is_told_from_a_remote_one():
    """A DSN written by the MTA that took the copy (its Received field with the injection's
    queue id is by the Reporting-MTA) reports what its log already says; a remote server's
    DSN about the same copy does not."""
    raw = read("sisimai/lhost-sendmail-01.eml")  # returned copy: by smtpgw ... id r9G5FXh9018568
    ours = {"mta_queue_id": "r9G5FXh9018568"}
    report = classify(raw, CLASSIFIER)
    assert report.reporting_mta == "smtpgw.example.jp"
    assert from_sending_mta(report, ours, raw)
    assert not from_sending_mta(report, {"mta_queue_id": "OTHER123"}, raw)
    assert not from_sending_mta(report, None, raw)
    remote = raw.replace(b"Reporting-MTA: dns; smtpgw.example.jp", b"Reporting-MTA: dns; mx.far")
    assert not from_sending_mta(classify(remote, CLASSIFIER), ours, remote)
