"""Webhook delivery as SparkPost does it (SPEC 7): the dispatcher the tracker runs.

Each ``[[webhooks]]`` endpoint gets a worker thread of its own (webhook_worker), so neither
tracking nor the other endpoints ever wait for a slow or dead receiver. Batches are JSON
arrays of SparkPost envelopes, up to 10,000 events or 30 s, POSTed with a 10 s timeout and
retried with exponential backoff for 8 hours (webhook_http has the exact request). Each
endpoint's place in the event stream is stored with the events (webhook_cursor), so delivery
resumes after a restart — the batch in flight first, under its old batch id — and several
tracker nodes on one PostgreSQL store take turns through a lease instead of sending twice.

Use::

    dispatcher = WebhookDispatcher(store, config.webhooks)
    dispatcher.start()
    ...
    dispatcher.notify()  # after events were recorded: deliver them without waiting for a poll
    ...
    dispatcher.stop(timeout=5.0)
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from ..config import WebhookConfig
from .model import EVENT_CLASSES
from .store import EventStore
from .webhook_cursor import EndpointCursor
from .webhook_http import BATCH_ID_HEADER, SIGNATURE_HEADER, USER_AGENT, Poster
from .webhook_worker import DeliveryTuning, EndpointStats, EndpointWorker

__all__ = [
    "BATCH_ID_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "check_hooks",
    "DeliveryTuning",
    "EndpointStats",
    "WebhookDispatcher",
    "endpoint_key",
    "endpoint_label",
]


def endpoint_key(hook: WebhookConfig) -> str:
    """The stable identity of an endpoint's stored cursor: its ``name``, else its URL.

    The URL is hashed because it may carry a secret (a token in the query string) that has no
    business in the database."""
    if hook.name:
        return f"name:{hook.name}"
    return "url:" + hashlib.sha256(hook.url.encode()).hexdigest()[:32]


def endpoint_label(hook: WebhookConfig) -> str:
    """How logs and the cursor table name an endpoint: its name, else the URL without
    credentials or query."""
    if hook.name:
        return hook.name
    parts = urlsplit(hook.url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_hooks(hooks: Sequence[WebhookConfig]) -> None:
    """ValueError for an unknown event type in a filter or two endpoints with one identity
    (for `smtpapi-milter check`; the dispatcher checks too)."""
    seen: dict[str, int] = {}
    for i, hook in enumerate(hooks):
        unknown = sorted(set(hook.events) - set(EVENT_CLASSES))
        if unknown:
            known = ", ".join(EVENT_CLASSES)
            raise ValueError(f"webhooks[{i}].events: unknown {unknown} (known: {known})")
        # Both must be unique: the key names the stored cursor, the label logs and metrics.
        for identity in (endpoint_key(hook), "label:" + endpoint_label(hook)):
            if identity in seen:
                raise ValueError(
                    f"webhooks[{i}] and webhooks[{seen[identity]}] look like one endpoint "
                    f"({identity}): give them different 'name's"
                )
            seen[identity] = i


class WebhookDispatcher:
    """Delivers stored events to every configured webhook endpoint, one thread each.

    ``store`` is shared with the caller (the tracker's own store is fine: delivery uses few,
    short transactions). ``clock`` gives unix seconds (tests pass a fake one); ``owner``
    names this process in the lease (default: host, pid and a random part). Raises
    ValueError for an unknown event type in a filter or two endpoints with one identity.
    """

    def __init__(
        self,
        store: EventStore,
        hooks: Sequence[WebhookConfig],
        *,
        tuning: DeliveryTuning | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        check_hooks(hooks)
        self.tuning = tuning or DeliveryTuning()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.endpoints: list[EndpointWorker] = []
        for hook in hooks:
            cursor = EndpointCursor(
                store,
                endpoint_key(hook),
                endpoint_label(hook),
                self.owner,
                lease_seconds=self.tuning.lease_seconds,
                clock=clock,
            )
            poster = Poster(hook.url, self.tuning.timeout, ssl_context)
            self.endpoints.append(
                EndpointWorker(store, hook, cursor, self.tuning, clock=clock, poster=poster)
            )
        self._started = False

    def start(self) -> None:
        """Start one delivery thread per endpoint (daemon threads; call once)."""
        if self._started:
            raise RuntimeError("WebhookDispatcher.start() called twice")
        self._started = True
        for worker in self.endpoints:
            worker.start()

    def notify(self) -> None:
        """Events were just stored: look for them now rather than at the next poll.

        Cheap and non-blocking (sets a flag per endpoint); call it after every ``record``.
        """
        for worker in self.endpoints:
            worker.wake()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every thread, cutting POSTs in progress, and release the leases.

        Waits up to ``timeout`` seconds in all; True if every thread ended. A batch cut off
        stays in flight in the store and is sent again, same batch id, by the next owner.
        """
        for worker in self.endpoints:
            worker.request_stop()
        deadline = time.monotonic() + timeout
        if not self._started:
            return True
        return all(
            [worker.join(max(0.0, deadline - time.monotonic())) for worker in self.endpoints]
        )

    def stats(self) -> dict[str, EndpointStats]:
        """Per endpoint label: its counters (live objects, updated by the threads)."""
        return {worker.label: worker.stats for worker in self.endpoints}
