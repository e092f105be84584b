"""What all milter connections share, and how it is reloaded.

The pipeline (configuration, policies, keys) is an immutable object; reloading builds a new
one completely and then swaps one reference, so a connection in progress keeps the set it
started with and a broken file never leaves a half-loaded configuration behind.
"""

from __future__ import annotations

import threading

import structlog

from ..config import Config, ConfigError, load_config
from ..events.store import LazyStore, StoreTagRegistry, StoreUnavailable, redact
from ..ids import IdGenerator
from ..pipeline import Pipeline
from ..policy import PolicyLoadError, PolicySet
from ..replies import SmtpReply, SmtpReplyError
from ..suppression.cache import SuppressionCache
from ..tokens import TokenCodec
from .metrics import MilterMetrics

log = structlog.get_logger("smtpapi_milter.milter")

STORE_DOWN = SmtpReply("451", "4.3.0", "event store unavailable, try again later")


class MilterState:
    """The current pipeline and the event store, shared by every connection thread."""

    def __init__(self, config_path: str | None, config: Config, worker: int = 0, workers: int = 1):
        self.config_path = config_path
        self.worker, self.workers = worker, workers
        self._ids: IdGenerator | None = None
        self._lock = threading.Lock()
        self._store: LazyStore | None = None
        self.metrics: MilterMetrics | None = None  # set by the worker that serves
        self._transactions = 0  # in progress, for draining on SIGTERM
        self._draining = False
        self._idle = threading.Condition()
        self.pipeline = self._build(config)
        self._slots = config.milter.max_concurrent_rewrites
        self.rewrite_slots = threading.BoundedSemaphore(self._slots)

    @classmethod
    def load(cls, config_path: str | None, worker: int = 0, workers: int = 1) -> MilterState:
        """Load configuration and policies; raises ConfigError/PolicyLoadError if broken.

        ``worker`` of ``workers``: this process's share of the node's transmission ids.
        """
        return cls(config_path, load_config(config_path), worker, workers)

    def _build(self, config: Config) -> Pipeline:
        policies = PolicySet.load(config.policy.directory)
        codec = TokenCodec.from_config(config)
        store = self._store_for(config.event_store_url)
        tags = StoreTagRegistry(store)
        # A reload starts an empty cache: a changed cache_seconds applies at once.
        suppression = SuppressionCache(store, config.suppression.cache_seconds)
        return Pipeline(
            config,
            policies,
            codec,
            ids=self._id_generator(config),
            tag_registry=tags,
            suppression=suppression,
        )

    def _id_generator(self, config: Config) -> IdGenerator:
        # Kept across reloads: a fresh generator would restart the sequence within the
        # current millisecond and could hand out an id the old one just gave.
        node = config.smtpapi.node_id
        if self._ids is None or self._ids.node_id != node:
            self._ids = IdGenerator(node, worker=self.worker, workers=self.workers)
        return self._ids

    def _store_for(self, url: str) -> LazyStore:
        """The store at ``url``, opened on first use: the milter serves while it is down
        (messages that need it get 451) and picks it up when it is back."""
        with self._lock:
            if self._store is not None and self._store.url == url:
                return self._store
            old, self._store = self._store, LazyStore(url)
        if old is not None:
            old.close()
        return self._store

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
        assert self._store is not None
        try:
            self._store.record(events)
        except StoreUnavailable as exc:
            log.warning("event store unavailable", store=redact(self._store.url), error=str(exc))
            raise SmtpReplyError(STORE_DOWN) from None

    def record_rejections(self, events: list[dict]) -> None:
        """Store policy_rejection events if the store can take them now; never raises for a
        store that cannot (the refusal they describe goes out either way)."""
        assert self._store is not None
        try:
            self._store.record(events)
        except StoreUnavailable as exc:
            log.warning("policy_rejection not recorded: event store unavailable", error=str(exc))

    def transaction_started(self) -> bool:
        """Count a new transaction; False (not counted) once the worker is draining."""
        with self._idle:
            if self._draining:
                return False
            self._transactions += 1
            return True

    def transaction_ended(self) -> None:
        with self._idle:
            self._transactions -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuse new transactions and wait until none is in progress; False if some still
        are at ``timeout``."""
        with self._idle:
            self._draining = True
            return self._idle.wait_for(lambda: self._transactions == 0, timeout)

    def close(self) -> None:
        """Close the event store (at exit, once no connection can record any more)."""
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
