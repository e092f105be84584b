"""Bounce classes: SparkPost's classes decided by the ordered rules of the shipped data file,
an operator's file tried first, bad files refused with the file, rule and key named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.delivery.bounce_class import (
    BOUNCE_CLASSES,
    BounceClassifier,
    BounceRulesError,
    bounce_category,
    parse_postfix_reason,
)
from smtpapi_milter.delivery.required_text import required_literals

from .bounce_texts import ROWS


@pytest.fixture(scope="module")
def classifier() -> BounceClassifier:
    return BounceClassifier.load()


@pytest.mark.parametrize(
    "enhanced, code, text, expected",
    [
        ("5.1.1", 550, "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", 10),
        ("4.2.2", 452, "4.2.2 Mailbox full", 22),
        (
            "5.7.1",
            550,
            "5.7.1 Our system has detected that this message is likely unsolicited mail",
            51,
        ),
        ("5.7.1", 554, "5.7.1 <a@b.example>: Relay access denied", 54),
        (None, None, "", 1),
    ],
)
def test_first_rules(classifier, enhanced, code, text, expected):
    assert classifier.classify(enhanced, code, text) == expected


def test_operator_rules_are_tried_first(tmp_path):
    extra = tmp_path / "rules.toml"
    extra.write_text('[[rule]]\nclass = 25\ntext = "quota policy of example"\n')
    classifier = BounceClassifier.load(extra)
    assert classifier.classify("5.2.2", 552, "5.2.2 quota policy of example") == 25
    assert classifier.classify("5.2.2", 552, "5.2.2 Mailbox full") == 22


@pytest.mark.parametrize(
    "content, named",
    [
        ('[[rule]]\nclass = 7\ntext = "x"\n', "class = 7"),
        ('[[rule]]\nclass = 10\nenhanced = "5.1"\n', "enhanced = '5.1'"),
        ('[[rule]]\nclass = 10\ncode = "6xx"\n', "code = '6xx'"),
        ('[[rule]]\nclass = 10\ntext = "("\n', "text '(' is not a regex"),
        ("[[rule]]\nclass = 10\n", "at least one of"),
        ('[[rule]]\nclass = 10\ntxt = "a"\n', "unknown key 'txt'"),
        ("[[rule]\n", "not a TOML file"),
    ],
)
def test_bad_rules_files_are_refused_naming_file_rule_and_key(tmp_path, content, named):
    extra = tmp_path / "rules.toml"
    extra.write_text(content)
    with pytest.raises(BounceRulesError) as error:
        BounceClassifier.load(extra)
    assert str(extra) in str(error.value) and named in str(error.value)


def test_missing_operator_file_is_named(tmp_path):
    with pytest.raises(BounceRulesError, match="absent.toml"):
        BounceClassifier.load(tmp_path / "absent.toml")


def _postfix_fields(dsn: str | None, reason: str) -> tuple[str | None, int | None, str]:
    """What the maillog follower passes: Postfix's dsn=, the remote reply code when a remote
    server answered, and the reply text, from a reason as Postfix logs it."""
    if reason[:3].isdigit():
        reason = f"host mx.example.net[192.0.2.1] said: {reason} (in reply to RCPT TO command)"
    code, enhanced, text = parse_postfix_reason(reason)
    if dsn is None:  # Postfix's dsn= is the reply's enhanced code, else its class with .0.0
        dsn = enhanced or (f"{code // 100}.0.0" if code else None)
    return dsn, code, text


@pytest.mark.parametrize(
    "dsn, reason, expected, source", ROWS, ids=[f"{row[2]}-{row[1][:40]}" for row in ROWS]
)
def test_real_bounce_texts_get_their_class(classifier, dsn, reason, expected, source):
    assert classifier.classify(*_postfix_fields(dsn, reason)) == expected, source


def test_the_table_is_large_and_sourced():
    assert len(ROWS) >= 60
    assert all(source for *_, source in ROWS)
    assert len({source for *_, source in ROWS}) >= 30


def test_postfix_reason_is_split_into_code_enhanced_and_text():
    reason = (
        "host gmail-smtp-in.l.google.com[192.0.2.1] said: 550-5.7.1 [192.0.2.25] Our system "
        "has detected that this message is 550-5.7.1 likely unsolicited mail. 550 5.7.1 "
        "https://support.google.com/mail/?p=UnsolicitedMessage - gsmtp (in reply to end of "
        "DATA command)"
    )
    code, enhanced, text = parse_postfix_reason(reason)
    assert (code, enhanced) == (550, "5.7.1")
    assert "this message is likely unsolicited mail." in text
    assert not text.endswith(")") and "said:" not in text
    greeting = (
        "host mta7.am0.yahoodns.net[192.0.2.1] refused to talk to me: 421 4.7.0 [TSS04] "
        "Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user "
        "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
    )
    assert parse_postfix_reason(greeting)[:2] == (421, "4.7.0")
    own = "connect to mx.example.com[192.0.2.1]:25: Connection timed out"
    assert parse_postfix_reason(own) == (None, None, own)


@pytest.mark.parametrize(
    "enhanced, code, text, expected",
    [
        (None, None, "550 5.1.1 <a@b.example>: User unknown", 10),  # both from the text
        (None, 552, "Mailbox full", 22),  # enhanced follows the code's class: 5.0.0
        (None, None, "Sorry, no mailbox here by that name. (#5.1.1)", 10),  # qmail's (#x.y.z)
        ("5.0.0", None, "no reason given", 40),
        ("4.0.0", None, "no reason given", 20),
        ("not a code", 999, "nothing known", 1),
    ],
)
def test_missing_codes_are_taken_from_the_text_or_the_reply_code(
    classifier, enhanced, code, text, expected
):
    assert classifier.classify(enhanced, code, text) == expected


def test_repeated_answers_come_from_the_cache_and_stay_bounded(classifier):
    fresh = BounceClassifier.load()
    first = fresh.classify("5.1.1", 550, "User unknown")
    assert fresh.classify("5.1.1", 550, "User unknown") == first == 10
    for n in range(BounceClassifier.CACHE_SIZE + 10):
        fresh.classify("4.4.1", None, f"connect to mx{n}.example.com: Connection refused")
    assert len(fresh._cache) <= BounceClassifier.CACHE_SIZE


def test_one_cache_entry_serves_every_recipient_of_the_same_reply():
    fresh = BounceClassifier.load()
    for name in ("jane", "john.doe+tag", "x_y"):
        text = f"<{name}@example.com>: Recipient address rejected: User unknown in local table"
        assert fresh.classify("5.1.1", 550, text) == 10
        assert fresh.classify(None, 554, f"{name}@example.com is no longer valid.") == 10
    assert len(fresh._cache) == 2


@settings(max_examples=400, deadline=None)
@given(
    enhanced=st.none() | st.text(max_size=20) | st.from_regex(r"\A[245]\.\d{1,4}\.\d{1,4}\Z"),
    code=st.none() | st.integers(min_value=-(2**70), max_value=2**70),
    text=st.text(max_size=600),
)
def test_classify_never_raises_and_returns_a_known_class(classifier, enhanced, code, text):
    assert classifier.classify(enhanced, code, text) in BOUNCE_CLASSES


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_parse_postfix_reason_never_raises(text):
    code, enhanced, rest = parse_postfix_reason(text)
    assert code is None or 200 <= code <= 599
    assert isinstance(rest, str)


def test_every_shipped_rule_is_used_by_the_table_or_documented():
    # Each class a shipped rule gives is one the table exercises, except the mail-handler
    # classes (auto-reply, challenge-response) that an SMTP reply hardly ever carries.
    shipped = {rule.bounce_class for rule in BounceClassifier.load()._rules}
    assert shipped - {row[2] for row in ROWS} <= {60, 100}


def test_bounce_category_follows_sparkpost():
    assert [bounce_category(c) for c in (10, 22, 51, 25, 1, 999)] == [
        "hard",
        "soft",
        "block",
        "admin",
        "undetermined",
        "undetermined",
    ]


def _without_prechecks(classifier: BounceClassifier) -> BounceClassifier:
    """The same rules, every regex run: what the substring pre-checks must never change."""
    return BounceClassifier(
        [
            dataclasses.replace(
                rule,
                literals=None,
                texts=tuple(dataclasses.replace(text, literals=None) for text in rule.texts),
            )
            for rule in classifier._rules
        ]
    )


# Pieces of real texts, letters re.IGNORECASE folds to ASCII ones, and noise: texts close
# enough to the rules that many of them match.
_FRAGMENTS = [word for _, reason, *_ in ROWS for word in reason.split()] + [
    "İ",
    "ı",
    "ſ",
    "K",
    "ß",
    "-",
    "550-5.7.1",
    "(#5.1.1)",
    "\n",
    "é",
]


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=4), max_size=25),
    upper=st.booleans(),
    enhanced=st.sampled_from([None, "5.1.1", "4.4.1", "5.7.1", "4.2.2", "5.0.0"]),
    code=st.sampled_from([None, 421, 450, 550, 554]),
)
def test_prechecks_never_change_a_class(classifier, words, upper, enhanced, code):
    text = " ".join(words)
    text = text.upper() if upper else text
    reference = _without_prechecks(classifier)
    assert classifier._classify(enhanced, code, text) == reference._classify(enhanced, code, text)


def test_prechecks_never_change_a_class_on_the_table(classifier):
    reference = _without_prechecks(classifier)
    for dsn, reason, *_ in ROWS:
        fields = _postfix_fields(dsn, reason)
        swapped = (fields[0], fields[1], fields[2].swapcase())
        for args in (fields, swapped):
            assert classifier._classify(*args) == reference._classify(*args)


@pytest.mark.parametrize(
    "pattern, literals",
    [
        ("user unknown", ("user unknown",)),
        (r"\bvirus", ("virus",)),
        ("spam (message|content)", ("spam ",)),
        ("Mailbox .{0,30}FULL", ("mailbox ",)),
        ("a|bcd", None),  # an alternative without a literal of three characters
        (r"\d+ errors?|timeout", (" error", "timeout")),
        ("(?x) over quota", None),  # verbose patterns are left to the regex
    ],
)
def test_required_literals(pattern, literals):
    assert required_literals(pattern) == literals


@pytest.mark.parametrize(
    "text, expected",
    [
        ("This message is likely unſolicited mail", 51),  # long s: re.IGNORECASE matches "s"
        ("Access denied, banned sendıng IP", 51),  # dotless i
        ("Mailbox FULL, İnbox over quota", 22),  # dotted capital I
        ("Relay access denied, KEEP OUT", 54),  # Kelvin sign
    ],
)
def test_letters_the_regex_folds_to_ascii_pass_the_prechecks(classifier, text, expected):
    assert classifier.classify("5.7.1", 550, text) == expected
    assert _without_prechecks(classifier).classify("5.7.1", 550, text) == expected


def test_readme_example_rule_works(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Bounce classes", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    extra = tmp_path / "rules.toml"
    extra.write_text(example)
    classifier = BounceClassifier.load(extra)
    assert classifier.classify("5.0.0", 550, "Mailbox of jane has been retired") == 10
    assert classifier.classify("4.0.0", 450, "Mailbox of jane has been retired") != 10
