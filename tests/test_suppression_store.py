"""The suppression list's store (SPEC 14): SparkPost's shape, case-insensitive recipients, one
entry per (recipient, type), and a lookup that honours the type of mail. SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpapi_milter.events.store import EventStore
from smtpapi_milter.suppression.store import (
    Suppression,
    SuppressionError,
    list_entries,
    lookup,
    normalize_recipient,
    suppress,
    unsuppress,
)

from .test_store import store, store_url  # noqa: F401 (fixtures: SQLite and PostgreSQL)


def test_suppress_is_case_insensitive_and_keeps_created(store: EventStore) -> None:  # noqa: F811
    before = time.time()
    suppress(store, "  Reader@Example.ORG ", description="asked by phone")
    [entry] = list_entries(store)
    assert isinstance(entry, Suppression)
    assert (entry.recipient, entry.type, entry.source, entry.description) == (
        "reader@example.org",
        "non_transactional",
        "manual",
        "asked by phone",
    )
    assert before <= entry.created == entry.updated <= time.time()
    suppress(store, "reader@example.org", source="list_unsubscribe", description="one-click")
    [again] = list_entries(store)
    assert (again.source, again.description) == ("list_unsubscribe", "one-click")
    assert again.created == entry.created and again.updated >= entry.updated


def test_lookup_honours_the_type_of_mail(store: EventStore) -> None:  # noqa: F811
    suppress(store, "news@example.org")
    suppress(store, "gone@example.org", type="transactional", source="bounce")
    asked = ["NEWS@example.org", "gone@example.org", "other@example.org"]
    assert lookup(store, asked, transactional=False) == {"NEWS@example.org"}
    assert lookup(store, asked, transactional=True) == {"gone@example.org"}
    assert lookup(store, [], transactional=False) == set()


def test_unsuppress_by_type_or_all(store: EventStore) -> None:  # noqa: F811
    for kind in ("transactional", "non_transactional"):
        suppress(store, "both@example.org", type=kind)
    assert unsuppress(store, "Both@example.org", "transactional") == 1
    assert [e.type for e in list_entries(store)] == ["non_transactional"]
    assert unsuppress(store, "both@example.org") == 1
    assert unsuppress(store, "both@example.org") == 0
    assert list_entries(store) == []


def test_list_filters_and_pages(store: EventStore) -> None:  # noqa: F811
    for n in range(5):
        suppress(store, f"user{n}@example.org", source="bounce" if n % 2 else "manual")
    suppress(store, "50%_off@example.org", description="Promo_Lover")
    assert [e.recipient for e in list_entries(store, source="bounce")] == [
        "user1@example.org",
        "user3@example.org",
    ]
    # LIKE's wildcards in the search text are literal
    assert [e.recipient for e in list_entries(store, search="%_")] == ["50%_off@example.org"]
    assert [e.recipient for e in list_entries(store, search="promo_l")] == ["50%_off@example.org"]
    first = list_entries(store, limit=2)
    rest = list_entries(store, limit=10, after=first[-1].cursor)
    assert [e.recipient for e in first + rest] == sorted(e.recipient for e in list_entries(store))


def test_suppress_inside_the_callers_transaction(store: EventStore) -> None:  # noqa: F811
    def work(cur: object) -> None:
        suppress(store, "tx@example.org", source="list_unsubscribe", cur=cur)
        raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        store.transaction(work, write=True)
    assert list_entries(store) == []  # rolled back with the caller's writes
    store.transaction(lambda cur: suppress(store, "tx@example.org", cur=cur), write=True)
    assert [e.recipient for e in list_entries(store)] == ["tx@example.org"]


@pytest.mark.parametrize(
    ("recipient", "kind", "source"),
    [
        ("", "non_transactional", "manual"),
        ("no-at-sign", "non_transactional", "manual"),
        ("a b@example.org", "non_transactional", "manual"),
        ("ok@example.org", "marketing", "manual"),
        ("ok@example.org", "transactional", "Manually Added"),
    ],
)
def test_bad_entries_are_refused(
    store: EventStore,  # noqa: F811
    recipient: str,
    kind: str,
    source: str,
) -> None:
    with pytest.raises(SuppressionError):
        suppress(store, recipient, type=kind, source=source)
    assert list_entries(store) == []


def _refused_by_character(text: str) -> bool:
    """The rule spelled out: any white space or control character refuses an address."""
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text.strip())


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=12),
        st.text(alphabet="ab@. \t\x00\x1c\x7f\x85\u2028é", max_size=10),
        st.sampled_from(["reader@example.org", "a b@example.org", "a\x7fb@example.org"]),
    )
)
def test_recipients_with_white_space_or_control_characters_are_refused(text: str) -> None:
    # normalize_recipient checks printable ASCII in C first: the same verdict as the rule.
    try:
        normalize_recipient(text)
    except SuppressionError as exc:
        refused = "white space" in str(exc)
    else:
        refused = False
    assert refused == _refused_by_character(text)
