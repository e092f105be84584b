"""Building the tracker's applications from the configuration, and serving them.

The HTTP server is Granian (Rust HTTP/1.1 under our Python apps), chosen by measurement:
a bare ASGI 302 on this 2-core machine ran at ~69k requests/s under Granian against ~40k under
uvicorn with httptools and uvloop and ~6k under Hypercorn (wrk, 64 connections, same run);
``make bench`` compares the whole tracker against nginx. Granian runs the application in a
worker process it spawns and respawns, which also keeps libmilter-style signal games out
of the picture.

The public listener is served through Granian's RSGI interface (rsgi.py: ~13 us less CPU a
request than ASGI for a bare app), the admin listener through ASGI.

The store, the token codec and the event writer live in the worker process and are created
at its start (they cannot cross a process boundary): ASGI lifespan startup on the admin
listener, the worker loop's first callback on the public one (rsgi.py says why not in
``__rsgi_init__``). The factory functions here take the
configuration path from ``$SMTPAPI_MILTER_CONFIG``, which ``serve`` sets.

``serve`` runs three processes: the two listeners and the journal indexer
(events/journal_indexer.py), which moves every public worker's journaled clicks into the
store. A public tracker built here without it (tests, tools) indexes in a thread instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .. import logs
from ..config import CONFIG_ENV, Config, ConfigError, load_config
from ..events.journal import Journal
from ..events.journal_indexer import PROCESS_CACHE_KIB, JournalIndexer
from ..events.store import LazyStore, StoreUnavailable, open_store, redact
from ..events.webhooks import check_hooks
from ..listen_check import check_host_port, granian_failed
from ..multiproc import MULTIPROC_ENV, counter_directory
from ..orphans import die_with_parent, mark_children
from ..signal_thread import call_on_stop_signals
from ..supervise import Supervisor
from ..tokens import TokenCodec
from . import dashboard, suppression_api, useragent, worker_stop
from .admin import AdminApp
from .admin_access import AllowedHosts, admin_token, check_host_names
from .app import ClientAddress, TrackerApp
from .asgi import Receive, Scope, Send
from .flood import FloodGuard
from .jobs import background_jobs
from .metrics import TRACKER_METRICS_ENV
from .recorder import EventRecorder
from .rsgi import RsgiTracker

log = structlog.get_logger("smtpapi_milter.tracker")

METRICS_PREFIX = "smtpapi-tracker-metrics-"
# Connections one Granian worker holds at once (its "backpressure"; Granian's default is
# backlog / workers = 512). Every open connection holds a slot until header_timeout closes
# it, so with the default 3000 silent sockets from one client kept a real click waiting
# 20 s (two header_timeout rounds). An idle connection costs ~10 KiB (8000 of them, half
# with a partial head: +84 MiB over the tracker), and Granian raises the descriptor limit
# to the hard one, so the slots are what runs out first: 4096 a worker.
CONNECTIONS_PER_WORKER = 4096
# Seconds a Granian worker has to stop before it is killed. A worker stops in well under a
# second; one told to stop as it started could stay for good (worker_stop.py). Killing it
# loses no answered click (each is in the journal before its answer), at most the answers
# of requests in flight, and a SIGTERM on the heels of a SIGHUP can meet a worker to kill
# twice (the old one, then the new): the stop takes that long.
WORKERS_KILL_TIMEOUT = 5
JOURNAL_DIRECTORY = "tracker-journal"  # under state_dir: events/journal.py
# Set by ``serve`` for its listeners: the journal indexer runs as a process beside them.
INDEXER_PROCESS_ENV = "SMTPAPI_TRACKER_INDEXER_PROCESS"


class Lifespan:
    """Wraps an ASGI app: runs ``startup`` / ``shutdown`` on the lifespan protocol."""

    def __init__(self, startup: Callable[[], Any], shutdown: Callable[[], None]):
        self._startup = startup
        self._shutdown = shutdown
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:  # a server without lifespan support
            self.app = self._startup()
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.app = self._startup()
                except Exception as exc:
                    log.exception("tracker failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
                worker_stop.resend_lost_stop()  # the loop runs and takes it now
            elif message["type"] == "lifespan.shutdown":
                self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def tracker_app(config: Config) -> Lifespan:
    """The public tracker for ``config`` as an ASGI app (tests, tools: the listener serves
    :func:`tracker_rsgi_app`)."""
    return Lifespan(*_tracker_lifetime(config))


def tracker_rsgi_app(config: Config) -> RsgiTracker:
    """The public tracker for ``config`` as the RSGI app the listener serves."""
    return RsgiTracker(*_tracker_lifetime(config))


def _tracker_lifetime(config: Config) -> tuple[Callable[[], TrackerApp], Callable[[], None]]:
    """The start (building the app) and the stop of the public tracker in a worker."""
    parts: dict[str, Any] = {}

    def startup() -> TrackerApp:
        useragent.warm_up()  # before serving, not on the first click
        # Serve even while the store is down: 503 until it is back, /healthz tells.
        store = LazyStore(config.event_store_url)
        directory = journal_directory(config)
        if not os.environ.get(INDEXER_PROCESS_ENV):  # nobody else indexes: this process does
            parts["indexer"] = JournalIndexer(directory, store).start()
        journal = Journal(directory)
        recorder = EventRecorder(store, journal=journal).start()
        tracker = config.engagement_tracker
        parts.update(store=store, recorder=recorder)
        assert recorder.indexer_status is not None
        return TrackerApp(
            codec=TokenCodec.from_config(config),
            recorder=recorder,
            client_address=ClientAddress(config.engagement_tracker.trusted_proxies),
            # What clicks get: 200 once the indexer says the store takes their events.
            health=recorder.indexer_status.up,
            guard=FloodGuard(tracker.flood_window, tracker.flood_token_hourly_limit),
        )

    def shutdown() -> None:
        if "recorder" in parts:
            parts["recorder"].stop()
        if "indexer" in parts:
            parts["indexer"].stop()  # after the last click journaled: it indexes that too
        if "store" in parts:
            parts["store"].close()

    return startup, shutdown


def journal_directory(config: Config) -> Path:
    return Path(config.state_dir) / JOURNAL_DIRECTORY


def create_tracker_app() -> RsgiTracker:
    """Granian's factory for the public listener (configuration from the environment)."""
    die_with_parent()  # runs in the Granian worker process: it ends with its listener
    logs.configure(stream=sys.stdout)
    return tracker_rsgi_app(load_config(os.environ.get(CONFIG_ENV)))


def admin_app(config: Config) -> Lifespan:
    """The admin listener's app (events API, dashboard) plus its background jobs."""
    parts: dict[str, Any] = {}

    def startup() -> AdminApp:
        store = LazyStore(config.event_store_url)
        parts["store"] = store
        parts["jobs"] = background_jobs(config, store)
        for job in parts["jobs"]:
            job.start()
        # prepare() made the token file already; creating it here too covers a listener
        # started on its own (the first to link the file wins, the other reads it).
        app = AdminApp(store, admin_token(config), AllowedHosts.from_config(config))
        return suppression_api.install(dashboard.install(app))

    def shutdown() -> None:
        for job in parts.get("jobs", []):
            job.stop()
        if "store" in parts:
            parts["store"].close()

    return Lifespan(startup, shutdown)


def create_admin_app() -> Lifespan:
    """Granian's factory for the admin listener (configuration from the environment)."""
    die_with_parent()  # runs in the Granian worker process: it ends with its listener
    logs.configure(stream=sys.stdout)
    return admin_app(load_config(os.environ.get(CONFIG_ENV)))


LISTENERS = {  # name -> (Granian's factory, the [engagement_tracker] key of its address)
    "public": ("create_tracker_app", "listen"),
    "admin": ("create_admin_app", "admin_listen"),
}
# The public listener's hot routes answer through RSGI (rsgi.py); the admin listener's
# traffic is small and its apps are ASGI.
INTERFACES = {"public": "rsgi", "admin": "asgi"}


def check(config: Config) -> None:
    """Refuse to start what cannot work, naming the file and key (before any fork)."""
    tracker = config.engagement_tracker
    for key in ("listen", "admin_listen"):
        host, sep, port = getattr(tracker, key).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{config.source}: 'engagement_tracker.{key}' must be HOST:PORT")
    check_host_names(config)
    try:
        check_hooks(config.webhooks)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: webhooks: {exc}") from None
    if config.events.webhook_batch_size < 1 or config.events.webhook_batch_seconds < 0:
        raise ConfigError(
            f"{config.source}: 'events.webhook_batch_size' must be at least 1 and "
            "'events.webhook_batch_seconds' not negative"
        )
    for key in ("workers", "header_timeout"):
        if getattr(tracker, key) < 1:
            raise ConfigError(f"{config.source}: 'engagement_tracker.{key}' must be at least 1")
    for key in ("flood_window", "flood_token_hourly_limit"):
        if getattr(tracker, key) < 0:
            raise ConfigError(
                f"{config.source}: 'engagement_tracker.{key}' must not be negative "
                f"(0 turns it off), not {getattr(tracker, key)}"
            )


def prepare(config: Config) -> None:
    """Create the key and admin token files, and migrate the store once if it is up, before
    workers start."""
    TokenCodec.from_config(config)
    admin_token(config)
    try:
        open_store(config.event_store_url).close()  # opening migrates
    except StoreUnavailable as exc:
        log.warning(
            "event store unavailable: tracking answers 503 until it is back", error=str(exc)
        )


def serve_indexer(config_path: str | None) -> int:
    """Run the node's journal indexer until SIGTERM (``tracker --listener indexer``)."""
    config = load_config(config_path)
    store = LazyStore(config.event_store_url)
    directory = journal_directory(config)
    indexer = JournalIndexer(directory, store, idle=True, cache_kib=PROCESS_CACHE_KIB)
    call_on_stop_signals(lambda: indexer.stop(timeout=0))  # run ends after its last passes
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nothing of it is reloadable
    try:
        indexer.run()
    finally:
        store.close()
    return 0


def serve_listener(config_path: str | None, listener: str) -> int:
    """Run one listener under Granian until SIGTERM (Granian respawns a crashed worker)."""
    if listener == "indexer":
        return serve_indexer(config_path)
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    config = load_config(config_path)
    factory, key = LISTENERS[listener]
    setting, address = f"[engagement_tracker] {key}", getattr(config.engagement_tracker, key)
    check_host_port(setting, address)  # one clear line, not Granian's backtrace
    host, _, port = address.rpartition(":")
    if config_path:  # the worker processes read it from the environment
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    own_metrics_dir = ""
    if listener == "public":
        # Before Granian starts its workers: each counts into its own files here, which the
        # admin listener reads (metrics.py). ``serve`` names one both listeners share.
        metrics_dir = os.environ.get(TRACKER_METRICS_ENV, "")
        if not metrics_dir:
            metrics_dir = own_metrics_dir = counter_directory(METRICS_PREFIX)
        os.environ[MULTIPROC_ENV] = metrics_dir
    server = Server(
        f"smtpapi_milter.tracker.server:{factory}",
        address=host.strip("[]"),
        port=int(port),
        interface=Interfaces(INTERFACES[listener]),
        # uvloop rather than asyncio's own loop: its scheduling, futures and wake-ups from
        # other threads are C, and every click is woken into the loop from Granian's thread
        # (and was again from the journal writer's, before the loop flushed the journal
        # itself: recorder.py). With the faster token decoding
        # of the same change: ~10 % less CPU per click, ~20 % more clicks/s (live A/B runs
        # under wrk on a shared 2-core machine, noisy).
        loop=Loops.uvloop,
        factory=True,
        workers=config.engagement_tracker.workers if listener == "public" else 1,
        websockets=False,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        # A worker that has not stopped by then is killed (worker_stop.py says how one
        # could stay, stopping the listener with it): its journal holds every click answered.
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
        # HTTP/1 only (no browser speaks cleartext HTTP/2): in Granian's "auto" mode the
        # connection waits, with no timer, for bytes to tell the protocol, so a client that
        # connected and sent nothing held a slot forever; Granian serves ``backpressure``
        # connections per worker, and a few thousand such sockets stopped the tracker.
        http=HTTPModes.http1,
        backpressure=CONNECTIONS_PER_WORKER,
        # hyper's HTTP/1 header timer runs from the connection's start and again after
        # each response: a connection silent, slow (slowloris) or idle in keep-alive for
        # header_timeout is closed.
        http1_settings=HTTP1Settings(
            header_read_timeout=config.engagement_tracker.header_timeout * 1000
        ),
        log_enabled=True,
        log_level="warning",
        log_access=False,
    )
    mark_children()  # Granian's worker processes (forks of this one) die with it
    worker_stop.remember(server)  # for the workers, which it forks
    try:
        server.serve()
    except RuntimeError as exc:  # taken between our check and Granian's bind
        raise granian_failed(setting, address, exc) or exc from None
    finally:
        if own_metrics_dir:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
    return 0


def serve(config_path: str | None) -> int:
    """``smtpapi-milter tracker``: both listeners, supervised."""
    config = load_config(config_path)
    check(config)
    prepare(config)
    base = [sys.executable, "-m", "smtpapi_milter.cli", "tracker"]
    if config_path:
        base += ["--config", os.path.abspath(config_path)]
    children = {name: [*base, "--listener", name] for name in [*LISTENERS, "indexer"]}
    os.environ[INDEXER_PROCESS_ENV] = "1"  # the public workers leave indexing to it
    log.info(
        "tracker starting",
        listen=config.engagement_tracker.listen,
        admin_listen=config.engagement_tracker.admin_listen,
        store=redact(config.event_store_url),
    )
    # The public workers' counters, summed on the admin listener's /metrics (metrics.py).
    os.environ[TRACKER_METRICS_ENV] = metrics_dir = counter_directory(METRICS_PREFIX)
    try:
        return Supervisor(children).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
