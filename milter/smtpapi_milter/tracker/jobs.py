"""What runs beside the admin listener, once per node: retention and webhook delivery.

Both need the event store, which may be down when the tracker starts: each job waits for it
in its own thread instead of holding up the listener.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from ..config import Config
from ..events.store import LazyStore, StoreUnavailable
from ..events.webhook_worker import DeliveryTuning
from ..events.webhooks import WebhookDispatcher
from . import metrics

log = structlog.get_logger("smtpapi_milter.tracker")


def background_jobs(config: Config, store: LazyStore) -> list[Any]:
    """What runs beside the admin listener, once per node: retention and webhooks."""
    jobs: list[Any] = []
    if config.events.retention:
        jobs.append(Retention(store, config.events.retention))
    if config.webhooks:
        jobs.append(Webhooks(store, config))
    return jobs


class _Job:
    """A background thread that waits for the store, then works every ``INTERVAL``."""

    INTERVAL = 3600.0
    name = "job"

    def __init__(self, store: LazyStore):
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except StoreUnavailable as exc:
                log.warning(f"{self.name}: event store unavailable", error=str(exc))
                self._stop.wait(min(self.INTERVAL, 5.0))
                continue
            self._stop.wait(self.INTERVAL)


class Retention(_Job):
    """Deletes events older than ``retention`` seconds, hourly."""

    name = "retention"

    def __init__(self, store: LazyStore, retention: int):
        super().__init__(store)
        self.retention = retention

    def run_once(self) -> None:
        deleted = self.store.get().delete_older_than(time.time() - self.retention)
        if deleted:
            log.info("retention: events deleted", deleted=deleted, retention=self.retention)


class Webhooks(_Job):
    """Starts webhook delivery once the store is reachable (it polls for new events)."""

    name = "webhooks"

    def __init__(self, store: LazyStore, config: Config):
        super().__init__(store)
        self.config = config
        self.dispatcher: WebhookDispatcher | None = None

    def run_once(self) -> None:
        if self.dispatcher is None:
            events = self.config.events
            tuning = DeliveryTuning(
                max_batch=events.webhook_batch_size, max_wait=events.webhook_batch_seconds
            )
            self.dispatcher = WebhookDispatcher(
                self.store.get(), self.config.webhooks, tuning=tuning
            )
            self.dispatcher.start()
            metrics.watch_webhooks(self.dispatcher)
            self._stop.wait()  # the dispatcher has its own threads from here on

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout)
