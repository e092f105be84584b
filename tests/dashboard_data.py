"""Events in bulk for the dashboard tests, made by the same functions the milter and the
tracker use (``injection_event``, ``engagement_event``, the real agent classifier), with
timestamps spread over days that real HTTP requests in a test cannot have.

- :func:`bulk_events`: thousands of small campaigns, all older than a day.
- :func:`showcase_events`: one campaign with a realistic week: sends in three waves, opens
  decaying after each with a daily rhythm, prefetches at delivery, scanners at delivery.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from smtpapi_milter.events.model import engagement_event, injection_event
from smtpapi_milter.tokens import TrackingData
from smtpapi_milter.tracker.useragent import user_agent_parsed

BULK_CAMPAIGNS = 2100
DAY = 86400
PEOPLE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
)
APPLE_MPP = "Mozilla/5.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"
SHOWCASE_LINKS = (
    ("https://shop.example.com/offer", "Main offer"),
    ("https://shop.example.com/story", "Read more"),
    ("https://shop.example.com/shoes?utm_source=newsletter", "Shoes"),
    ("https://shop.example.com/stores", ""),
)


def injection(n: str, campaign: str, rcpt: str, at: float, tags: list[str]) -> dict[str, Any]:
    """The injection event of one recipient's copy, numbered ``n``."""
    return injection_event(
        event_id=f"inj-{n}",
        transmission_id=f"tx-{campaign}",
        message_id=f"msg-{n}",
        rcpt_to=rcpt,
        campaign_id=campaign,
        customer_id="",
        tags=tags,
        metadata=None,
        msg_from="news@example.com",
        friendly_from="news@example.com",
        subject=f"{campaign} news",
        injection_time=at,
    )


def engagement(
    n: str, kind: str, sent: dict[str, Any], at: float, agent: str, link=("", "")
) -> dict[str, Any]:
    """A ``kind`` event at ``at`` for the mail of injection event ``sent``, by ``agent``."""
    injected = float(sent["timestamp"])
    data = TrackingData(
        kind=kind,
        transmission_id=sent["transmission_id"],
        message_id=sent["message_id"],
        rcpt_to=sent["rcpt_to"],
        injection_time=int(injected),
        campaign_id=sent["campaign_id"],
        tags=tuple(sent["rcpt_tags"]),
        target_url=link[0],
        link_name=link[1],
    )
    return engagement_event(
        kind=kind,
        event_id=f"{kind}-{n}",
        now=at,
        data=data,
        ip_address="192.0.2.7",
        user_agent=agent,
        user_agent_parsed=user_agent_parsed(agent, kind, injected, at),
    )


def bulk_events(count: int = BULK_CAMPAIGNS, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` campaigns ``bulk-0000``...: one or two recipients each, days ago."""
    rng, now, events = random.Random(seed), time.time(), []
    for n in range(count):
        campaign = f"bulk-{n:04d}"
        for r in range(1 + n % 2):
            at = now - 2 * DAY - rng.random() * 20 * DAY
            mail = injection(f"{campaign}-{r}", campaign, f"r{r}@bulk.example", at, [])
            events.append(mail)
            if rng.random() < 0.5:
                opened = at + rng.random() * DAY / 2
                events.append(engagement(f"{campaign}-{r}", "open", mail, opened, PEOPLE[1]))
    return events


def _daily_rhythm(at: float) -> float:
    """How likely people read mail at this time of day (UTC): high by day, low at night."""
    hour = (at % DAY) / 3600
    return 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) if 6 <= hour <= 22 else 0.2


def showcase_events(recipients: int = 300, seed: int = 11) -> list[dict[str, Any]]:
    """``showcase-week``: a week of sends, opens, clicks, prefetches and scanners."""
    rng, now, events = random.Random(seed), time.time(), []
    waves = [now - 7 * DAY + 3600, now - 4 * DAY, now - 1 * DAY - 3600]
    for r in range(recipients):
        at = waves[r % len(waves)] + rng.random() * 600
        rcpt = f"person{r}@showcase.example"
        mail = injection(f"show-{r}", "showcase-week", rcpt, at, ["weekly"])
        events.append(mail)
        if r % 5 == 0:  # Apple Mail Privacy Protection fetches the pixel on delivery
            events.append(engagement(f"show-{r}-mpp", "open", mail, at + 60, APPLE_MPP))
        if r % 9 == 0:  # a gateway scanner follows a link on delivery
            link = SHOWCASE_LINKS[r % len(SHOWCASE_LINKS)]
            scanned = at + 2
            events.append(engagement(f"show-{r}-scan", "click", mail, scanned, SCANNER, link))
        for k in range(rng.choice((0, 0, 1, 1, 2, 3))):
            opened = at + rng.expovariate(1 / (DAY / 3))
            if opened >= now or rng.random() > _daily_rhythm(opened):
                continue
            agent = PEOPLE[r % len(PEOPLE)]
            events.append(engagement(f"show-{r}-{k}", "open", mail, opened, agent))
            if rng.random() < 0.35:
                link = SHOWCASE_LINKS[min(int(rng.expovariate(1.2)), len(SHOWCASE_LINKS) - 1)]
                clicked = opened + rng.random() * 120
                if clicked < now:
                    events.append(
                        engagement(f"show-{r}-{k}-c", "click", mail, clicked, agent, link)
                    )
    return events
