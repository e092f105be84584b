"""The ``events`` columns copied out of a payload (events/columns.py): the quick way with a
list of plain tags gives what cleaning each tag on its own gives, for any list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.events.columns import (
    TAG_SEPARATOR,
    cleaned_tags_column,
    derived_columns,
    tags_column,
)

TAG = st.one_of(
    st.text(max_size=6),
    st.text(alphabet=["a", "\x1f", "\x00", "é"], max_size=4),
    st.sampled_from(["news", "bench", "", TAG_SEPARATOR]),
    st.none(),
    st.integers(),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(TAG, max_size=6))
def test_tags_column_is_each_tag_cleaned(tags):
    assert tags_column(tags) == cleaned_tags_column(tags)


def test_plain_tags_and_the_ones_to_clean():
    sep = TAG_SEPARATOR
    assert tags_column(["news", "bench"]) == f"{sep}news{sep}bench{sep}"
    assert tags_column(["a\x00", "", None, f"b{sep}c"]) == f"{sep}a{sep}bc{sep}"
    assert tags_column([]) == "" and tags_column("news") == ""


def test_tags_seen_before_give_the_same_column_and_others_are_not_taken_for_them():
    sep = TAG_SEPARATOR
    for _ in range(2):  # the second time from the cache of plain tags
        assert tags_column(["1", "True"]) == f"{sep}1{sep}True{sep}"
        assert tags_column([1, True]) == cleaned_tags_column([1, True])
        assert tags_column([1.0, "True"]) == cleaned_tags_column([1.0, "True"])
        assert tags_column([["1"], "True"]) == cleaned_tags_column([["1"], "True"])
        assert tags_column(["news", ""]) == f"{sep}news{sep}"  # not plain: never cached


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["user_agent_parsed", "target_link_url", "target_link_name", "rcpt_tags"]),
        st.one_of(
            st.none(),
            st.text(max_size=5),
            st.lists(TAG, max_size=3),
            st.fixed_dictionaries({"is_bot": st.booleans()}),
        ),
    )
)
def test_a_missing_field_is_as_a_field_of_none(event):
    full = {
        name: event.get(name)
        for name in ("user_agent_parsed", "target_link_url", "target_link_name", "rcpt_tags")
    }
    assert derived_columns(event) == derived_columns(full)
