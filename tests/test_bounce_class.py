"""Bounce classes: SparkPost's classes decided by the ordered rules of the shipped data file,
an operator's file tried first, bad files refused with the file, rule and key named."""

from __future__ import annotations

import pytest

from smtpapi_milter.delivery.bounce_class import BounceClassifier, BounceRulesError


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
        ('[[rule]]\nclass = 10\ntext = "("\n', "text = ['(']"),
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
