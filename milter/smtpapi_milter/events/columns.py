"""The ``events`` columns copied out of an event's payload, for filtering and aggregating.

The payload keeps the exact event; these copies exist so that SQL can filter and count on
them the same way on SQLite and PostgreSQL (no JSON functions, which differ between the two
and fail on PostgreSQL for strings its JSONB refuses). Used by the store for every new event
and by the schema migration that back-fills older rows, so both agree by construction.
"""

from __future__ import annotations

from typing import Any

# Tags are stored as one string, each tag between two of these, so "has tag T" is a
# substring test for SEP + T + SEP. Tags cannot contain it (it is removed from them).
TAG_SEPARATOR = "\x1f"


def text_column(value: Any) -> str:
    """``value`` as a TEXT column: NUL and lone surrogates removed (PostgreSQL refuses NUL,
    neither driver encodes lone surrogates); the payload keeps the exact value."""
    if type(value) is str and value.isascii():  # the common case: nothing to encode
        return value.replace("\x00", "") if "\x00" in value else value
    if value is None:  # as common: a field this type of event lacks
        return ""
    text = str(value)
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def is_machine(parsed: Any) -> bool:
    """Whether a machine made an event with this ``user_agent_parsed``: a prefetch or a bot.

    A proxy alone is not a machine: Gmail's image proxy fetches when a person opens.
    """
    return isinstance(parsed, dict) and bool(parsed.get("is_prefetched") or parsed.get("is_bot"))


_STR_ONLY = {str}


def tags_column(tags: Any) -> str:
    """``rcpt_tags`` as one searchable string (see :data:`TAG_SEPARATOR`); '' for none."""
    if not isinstance(tags, list):
        return ""
    try:
        return _PLAIN_TAGS[tuple(tags)]
    except (KeyError, TypeError):  # TypeError: a tag that is a list or a dict
        pass
    if tags and {*map(type, tags)} == _STR_ONLY:
        # The common case, a few plain tags, in a few steps of C: nothing to clean when the
        # tags joined are ASCII without NUL and hold no separator but the joins, and none
        # is empty. cleaned_tags_column gives the same, a step per tag (a test holds them
        # to that).
        joined = TAG_SEPARATOR.join(tags)
        if (
            joined.isascii()
            and "\x00" not in joined
            and joined.count(TAG_SEPARATOR) == len(tags) - 1
            and "" not in tags
        ):
            column = TAG_SEPARATOR + joined + TAG_SEPARATOR
            if len(_PLAIN_TAGS) >= PLAIN_TAGS_KEPT:
                _PLAIN_TAGS.clear()  # what is common refills it
            _PLAIN_TAGS[tuple(tags)] = column
            return column
    return cleaned_tags_column(tags)


# Lists of plain tags seen, as tuples, and their column: most events carry one of a few
# (a campaign's), and finding it is a third of the checks above (the log follower makes
# tens of thousands of rows a second). Only lists of str are put here, and no other
# decoded JSON value (number, bool, None) equals a str, so a list that is not plain finds
# nothing; a list or dict in the list cannot be hashed (TypeError).
PLAIN_TAGS_KEPT = 1024
_PLAIN_TAGS: dict[tuple[str, ...], str] = {}


def cleaned_tags_column(tags: list[Any]) -> str:
    """:func:`tags_column` of a list, each tag cleaned on its own."""
    cleaned = [text_column(tag).replace(TAG_SEPARATOR, "") for tag in tags if tag is not None]
    cleaned = [tag for tag in cleaned if tag]
    return TAG_SEPARATOR + TAG_SEPARATOR.join(cleaned) + TAG_SEPARATOR if cleaned else ""


def tag_needle(tag: str) -> str:
    """What to search a tags column for to find ``tag``."""
    return TAG_SEPARATOR + text_column(tag).replace(TAG_SEPARATOR, "") + TAG_SEPARATOR


def derived_columns(event: dict[str, Any]) -> tuple[int, str, str, str]:
    """(machine, target_link_url, target_link_name, tags) for one flat event."""
    # A field the event lacks gives what the function would give for None, without the
    # call: most events lack most of these (the log follower stores tens of thousands a
    # second, none with a user agent or a link).
    get = event.get
    parsed, url, name, tags = (
        get("user_agent_parsed"),
        get("target_link_url"),
        get("target_link_name"),
        get("rcpt_tags"),
    )
    return (
        0 if parsed is None else (1 if is_machine(parsed) else 0),
        "" if url is None else text_column(url),
        "" if name is None else text_column(name),
        "" if tags is None else tags_column(tags),
    )


def bounce_class_column(event: dict[str, Any]) -> int | None:
    """The event's own ``bounce_class`` (a string of up to three digits, as the follower and
    the milter write it) as a number; None for an event without one. A sender's metadata
    is nested in ``rcpt_meta`` and never read here."""
    value = event.get("bounce_class")
    if type(value) is str and 0 < len(value) <= 3 and value.isdigit() and value.isascii():
        return int(value)
    if type(value) is int and 0 <= value <= 999:
        return value
    return None
