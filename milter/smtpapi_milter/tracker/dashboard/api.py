"""The JSON the dashboard reads: campaigns with their counts, over time, and their links.

Routes (on the admin listener, behind its token; counting rules in ``events.stats``):

- ``GET /api/v1/campaigns?since=&until=&tag=&search=&sort=&order=&page=&per_page=`` —
  ``{"results": [...], "total": N, "page": P, "per_page": N, "totals": {...},
  "any_events": bool}``. ``search`` matches part of the campaign id, any case; ``sort`` one
  of ``recent`` (default), ``campaign``, a count or a rate; ``order`` ``asc`` or ``desc``.
- ``GET /api/v1/campaigns/{id}?since=&until=&tag=`` — ``{"results": {...}}`` (404 without
  events in range). ``{id}`` is percent-encoded; the empty id is the mail sent without one.
- ``GET /api/v1/campaigns/{id}/timeseries?since=&until=&tag=&bucket=&tz_offset=`` —
  ``{"bucket": SECONDS, "results": [{"start", "injections", "opens", "clicks",
  "machine_opens", "machine_clicks"}, ...]}``; ``bucket`` in seconds (default: chosen from
  the span), buckets aligned to midnight at ``tz_offset`` seconds east of UTC.
- ``GET /api/v1/campaigns/{id}/links?since=&until=&tag=&limit=`` — most clicked links.
- ``GET /api/v1/campaigns/{id}/bounces?since=&until=&tag=&limit=`` — ``{"by_class":
  [{"bounce_class", "name", "category", "bounces"}, ...], "by_domain": [{"domain",
  "bounces", "hard_bounces", "soft_bounces", "block_bounces", "admin_bounces",
  "undetermined_bounces"}, ...]}``, most first (``limit`` domains).

Summaries carry injections, engagement, and delivery outcomes (delivered, delayed, bounced
by category, policy rejections, delivery_rate and the open / click rates over delivered;
list_unsubscribes, link_unsubscribes, unsubscribes and unsubscribe_rate over delivered;
out_of_band_bounces, spam_complaints and spam_complaint_rate over delivered;
definitions in ``events.delivery_stats``).
- ``GET /api/v1/tags`` — the registered tags, for the tag filter.
- ``GET /api/v1/floods?abused=1&campaign=&limit=`` — tokens whose repeated requests the tracker's
  flood guard folded instead of storing, most folded first: ``{"results": [{"token_key",
  "kind", "campaign_id", "message_id", "target_link_url", "folded", "first_seen",
  "last_seen", "abused_at"}, ...]}``; ``abused=1`` keeps the ones flagged as abused. The
  campaign page marks its flooded links with it.

Times as everywhere (unix seconds, ISO 8601, or an age such as ``7d``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ...events import floods, stats
from ...events.query import QueryError, parse_time
from ..admin import Request

CAMPAIGNS = "/api/v1/campaigns"
DEFAULT_PER_PAGE = 50
MAX_LINKS = 500
MAX_FLOODS = 1000
FLOODS = "/api/v1/floods"
_DETAIL_VIEWS = ("timeseries", "links", "bounces")


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.param(name)
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}")
    return value


def report_scope(request: Request, campaign: str | None = None) -> stats.Scope:
    """The filters every report takes: time range, tag, and for lists a search text."""
    since, until = request.param("since"), request.param("until")
    return stats.Scope(
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        tag=request.param("tag") or None,
        campaign=campaign,
        search=None if campaign is not None else (request.param("search") or "").strip(),
    )


async def campaigns(request: Request) -> tuple[int, Any]:
    """``GET /api/v1/campaigns``."""
    scope = report_scope(request)
    sort = request.param("sort") or "recent"
    if sort not in stats.SORTS:
        raise QueryError(f"unknown sort {sort!r}: use {', '.join(stats.SORTS)}")
    order = request.param("order") or ""
    if order not in ("", "asc", "desc"):
        raise QueryError("order must be asc or desc")
    per_page = _int(request, "per_page", DEFAULT_PER_PAGE, 1, stats.MAX_PER_PAGE)
    page = _int(request, "page", 1, 1, 1_000_000)
    report = await request.in_thread(
        lambda: request.store.campaign_report(
            scope,
            sort=sort,
            descending=None if not order else order == "desc",
            offset=(page - 1) * per_page,
            limit=per_page,
        )
    )
    return 200, {
        "results": report["campaigns"],
        "total": report["totals"]["campaigns"],
        "page": page,
        "per_page": per_page,
        "totals": report["totals"],
        "any_events": report["any_events"],
    }


async def campaign_detail(request: Request) -> tuple[int, Any]:
    """``GET /api/v1/campaigns/{id}`` and its ``/timeseries``, ``/links`` and ``/bounces``."""
    rest = request.raw_path[len(CAMPAIGNS) + 1 :]
    head, slash, view = rest.rpartition("/")
    # Only a real "/" starts a view: one inside a campaign id arrives encoded as %2F.
    campaign, view = (head, view) if slash and view in _DETAIL_VIEWS else (rest, "")
    scope = report_scope(request, unquote(campaign))
    if view == "timeseries":
        return 200, await _timeseries(request, scope)
    if view == "links":
        limit = _int(request, "limit", 20, 1, MAX_LINKS)
        links = await request.in_thread(lambda: request.store.campaign_links(scope, limit))
        return 200, {"results": links}
    if view == "bounces":
        limit = _int(request, "limit", 20, 1, MAX_LINKS)
        found = await request.in_thread(lambda: request.store.campaign_bounces(scope, limit))
        return 200, found
    report = await request.in_thread(lambda: request.store.campaign_report(scope, limit=1))
    if not report["campaigns"]:
        return 404, {"error": f"no events of campaign {scope.campaign!r} in this range"}
    return 200, {"results": report["campaigns"][0]}


async def _timeseries(request: Request, scope: stats.Scope) -> dict[str, Any]:
    bucket = _int(request, "bucket", 0, 0, 366 * 86400) or None
    if bucket is not None and bucket < 60:
        raise QueryError("bucket must be at least 60 seconds")
    tz_offset = _int(request, "tz_offset", 0, -14 * 3600, 14 * 3600)

    def work() -> dict[str, Any]:
        try:
            return request.store.campaign_timeseries(scope, bucket=bucket, tz_offset=tz_offset)
        except ValueError as exc:  # too many buckets for the span
            raise QueryError(str(exc)) from None

    found = await request.in_thread(work)
    return {"bucket": found["bucket"], "results": found["series"]}


async def tags(request: Request) -> tuple[int, Any]:
    """``GET /api/v1/tags``."""
    return 200, {"results": await request.in_thread(lambda: request.store.tags())}


async def flooded_tokens(request: Request) -> tuple[int, Any]:
    limit = _int(request, "limit", 100, 1, MAX_FLOODS)
    abused_only = request.param("abused") in ("1", "true", "yes")
    campaign = request.param("campaign")

    def work() -> list[dict]:
        return floods.flooded_tokens(
            request.store, abused_only=abused_only, campaign=campaign, limit=limit
        )

    rows = await request.in_thread(work)
    return 200, {"results": rows}
