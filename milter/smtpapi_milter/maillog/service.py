"""``smtpapi-milter maillog``: the follower as a service, built from ``[maillog]``."""

from __future__ import annotations

import threading
from typing import Any

import structlog

from ..config import Config, MaillogConfig
from ..delivery.bounce_class import BounceClassifier
from ..events.store import StoreUnavailable, open_store
from . import position
from .file_source import FileSource
from .follower import STORE_RETRY, Follower, install_signal_handlers

log = structlog.get_logger("smtpapi_milter.maillog")

JOURNALD = "journald"


def make_parser(kind: str) -> Any:
    """The parser for ``[maillog] format``."""
    if kind == "sendmail":
        from .sendmail import SendmailParser

        return SendmailParser()
    from .postfix import PostfixParser

    return PostfixParser()


def make_source(settings: MaillogConfig, store: Any) -> Any:
    """The source ``[maillog] source`` names, resuming at its stored position."""
    stored = position.load(store, settings.source)
    if settings.source == JOURNALD:
        from .journal_source import JournalSource

        cursor = stored if isinstance(stored, str) else None
        return JournalSource(cursor, settings.journal_directory)
    return FileSource(settings.source, stored if not isinstance(stored, str) else None)


def serve(config: Config) -> int:
    """Follow the MTA's log until SIGTERM; returns the exit status."""
    settings = config.maillog
    stopping = threading.Event()
    install_signal_handlers(stopping.set)
    classifier = BounceClassifier.load(settings.bounce_rules or None)
    store = _open_store(config.event_store_url, stopping)
    if store is None:
        return 0
    source = make_source(settings, store)
    follower = Follower(
        store,
        source,
        make_parser(settings.format),
        classifier,
        record_unknown=settings.record_unknown,
        batch_lines=settings.batch_lines,
        poll_interval=settings.poll_interval,
    )
    follower.stopping = stopping
    follower.bounce_classes = frozenset(config.suppression.bounce_classes)
    log.info("following", source=settings.source, format=settings.format)
    try:
        follower.run()
    finally:
        source.close()
        store.close()
    log.info("stopped", stored=follower.stored)
    return 0


def _open_store(url: str, stopping: threading.Event) -> Any:
    while True:
        try:
            return open_store(url)
        except StoreUnavailable as exc:
            log.error("event store unavailable, waiting", error=str(exc))
            if stopping.wait(STORE_RETRY):
                return None
