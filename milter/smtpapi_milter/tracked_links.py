"""Each recipient's tracked URLs: click links and pixel URLs carrying that copy's tokens."""

from __future__ import annotations

import dataclasses

from .config import Config
from .settings import TrackingSettings
from .tokens import TokenCodec, TrackingData

LINK_NAME_LIMIT = 63


class TrackedLinks:
    """Tracked URLs for one recipient's copy; the same link gets the same URL."""

    def __init__(
        self, config: Config, codec: TokenCodec, settings: TrackingSettings, base: TrackingData
    ):
        self._codec = codec
        domain = settings.tracking_domain
        self._click_prefix = f"{settings.click_scheme}://{domain}/c/"
        self._open_prefix = f"{settings.open_scheme}://{domain}/"
        self._base = base
        include = config.engagement_tracker.click_tracking_include_metadata
        click_base = base if include else dataclasses.replace(base, metadata=None)
        self._clicks = self._codec.click_tokens(click_base)
        self._cache: dict[tuple[str, str | None, bool], str] = {}

    def click(self, url: str, name: str | None, unsubscribe: bool) -> str:
        key = (url, name, unsubscribe)
        tracked = self._cache.get(key)
        if tracked is None:
            link_name = _truncate_utf8(name, LINK_NAME_LIMIT) if name else ""
            token = self._clicks.encode(url, link_name, unsubscribe)
            tracked = self._cache[key] = self._click_prefix + token
        return tracked

    def open(self) -> str:
        return self._open_prefix + "o/" + self._codec.encode(self._base)

    def initial_open(self) -> str:
        data = dataclasses.replace(self._base, kind="initial_open")
        return self._open_prefix + "i/" + self._codec.encode(data)

    def shortest_click_length(self) -> int:
        """A length this copy's tracked click URLs reach at least: the prefix and the token
        of an empty target (a few characters spared for compression's whims)."""
        return len(self._click_prefix) + len(self._clicks.encode("", "", False)) - 8


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")
