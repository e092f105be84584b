"""Events as a table for people (``smtpapi-milter events --format table``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..terminal import visible

_COLUMNS = ("time (UTC)", "type", "campaign", "recipient", "detail", "by")
_WIDTHS = (19, 16, 20, 30, 44, 0)
_OUTCOMES = (
    "delivery",
    "delay",
    "bounce",
    "policy_rejection",
    "out_of_band",
    "spam_complaint",
)  # no person or machine made


def _detail(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind in ("click", "link_unsubscribe"):
        name = event.get("target_link_name") or ""
        url = event.get("target_link_url") or ""
        return f"{name}: {url}" if name else url
    if kind == "injection":
        return event.get("subject") or ""
    if kind == "spam_complaint":
        by = event.get("report_by") or ""
        return f"{event.get('fbtype') or 'abuse'}" + (f" reported by {by}" if by else "")
    if kind in _OUTCOMES:  # the MTA's or the milter's reply says what happened
        return event.get("reason") or event.get("raw_reason") or event.get("ip_address") or ""
    return event.get("ip_address") or ""


def _by(event: dict[str, Any]) -> str:
    """Who made the event: a person, or which kind of machine."""
    parsed = event.get("user_agent_parsed") or {}
    if event.get("type") == "injection" or event.get("type") in _OUTCOMES:
        return ""
    return parsed.get("machine_reason") or "person"


def _fit(text: str, width: int) -> str:
    # Whitespace runs (newlines, tabs) read as one space; other controls as escapes, so
    # what a sender or a reader's client wrote cannot drive the operator's terminal.
    text = visible(" ".join(str(text).split()))
    if not width:
        return text
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(events: list[dict[str, Any]]) -> str:
    """One line per event, fixed-width columns, newest last."""
    rows = [_COLUMNS]
    for event in events:
        try:
            when = datetime.fromtimestamp(float(event.get("timestamp", 0)), UTC)
            stamp = when.strftime("%Y-%m-%d %H:%M:%S")
        except (TypeError, ValueError, OverflowError):
            stamp = "?"
        rows.append(
            (
                stamp,
                event.get("type", ""),
                event.get("campaign_id", ""),
                event.get("rcpt_to", ""),
                _detail(event),
                _by(event),
            )
        )
    lines = []
    for row in rows:
        cells = [_fit(cell, width).ljust(width) for cell, width in zip(row, _WIDTHS, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
