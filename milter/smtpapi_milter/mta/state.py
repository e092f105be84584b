"""What all milter connections share, and how it is reloaded.

The pipeline (configuration, policies, keys) is an immutable object; reloading builds a new
one completely and then swaps one reference, so a connection in progress keeps the set it
started with and a broken file never leaves a half-loaded configuration behind.
"""

from __future__ import annotations

import threading

import structlog

from ..config import Config, ConfigError, load_config
from ..events.store import EventStore, StoreTagRegistry, StoreUnavailable, open_store
from ..pipeline import Pipeline
from ..policy import PolicyLoadError, PolicySet
from ..replies import SmtpReply, SmtpReplyError
from ..tokens import TokenCodec

log = structlog.get_logger("smtpapi_milter.milter")

STORE_DOWN = SmtpReply("451", "4.3.0", "event store unavailable, try again later")


class MilterState:
    """The current pipeline and the event store, shared by every connection thread."""

    def __init__(self, config_path: str | None, config: Config):
        self.config_path = config_path
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        self._store_url = ""
        self.pipeline = self._build(config)
        self._slots = config.milter.max_concurrent_rewrites
        self.rewrite_slots = threading.BoundedSemaphore(self._slots)

    @classmethod
    def load(cls, config_path: str | None) -> MilterState:
        """Load configuration and policies; raises ConfigError/PolicyLoadError if broken."""
        return cls(config_path, load_config(config_path))

    def _build(self, config: Config) -> Pipeline:
        policies = PolicySet.load(config.policy.directory)
        codec = TokenCodec.from_config(config)
        store = self._open_store(config.event_store_url)
        tags = StoreTagRegistry(store) if store is not None else None
        return Pipeline(config, policies, codec, tag_registry=tags)

    def _open_store(self, url: str) -> EventStore | None:
        with self._lock:
            if self._store is not None and self._store_url == url:
                return self._store
            try:
                store = open_store(url)
            except StoreUnavailable as exc:
                # Keep serving: messages that need the store answer 451 until it is back.
                log.warning("event store unavailable", store=_redact(url), error=str(exc))
                return None
            old, self._store, self._store_url = self._store, store, url
        if old is not None:
            old.close()
        return store

    def reload(self) -> bool:
        """Build a new pipeline from the files; keep the old one if anything is wrong."""
        try:
            pipeline = self._build(load_config(self.config_path))
        except (ConfigError, PolicyLoadError) as exc:
            log.error("reload refused, keeping the running configuration", error=str(exc))
            return False
        self.pipeline = pipeline  # one reference swap: atomic for every reader
        if pipeline.config.milter.max_concurrent_rewrites != self._slots:
            # Connections holding a slot release it on the semaphore they took it from.
            self._slots = pipeline.config.milter.max_concurrent_rewrites
            self.rewrite_slots = threading.BoundedSemaphore(self._slots)
        log.info(
            "reloaded", config=pipeline.config.source, policies=len(pipeline.policies.policies)
        )
        return True

    def record(self, events: list[dict]) -> None:
        """Store injection events durably, or refuse the message with 451 4.3.0."""
        store = self._store or self._open_store(self.pipeline.config.event_store_url)
        if store is None:
            raise SmtpReplyError(STORE_DOWN)
        try:
            store.record(events)
        except StoreUnavailable as exc:
            log.warning("event store write failed", error=str(exc))
            raise SmtpReplyError(STORE_DOWN) from None


def _redact(url: str) -> str:
    """A store URL for the log, without a password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
