"""Typed configuration, loaded from TOML in one place (SPEC 9).

Sections and option names mirror Momentum's modules (``smtpapi``, ``engagement_tracker``) so
that an administrator who knows Momentum finds the same knobs. Every key has a default that
runs on one machine; an unknown key is an error naming the key and the file, because a typo
in a mail server's configuration should never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .addresses import listen_address, milter_socket

DEFAULT_CONFIG_PATH = "/etc/smtpapi-milter/smtpapi-milter.toml"
CONFIG_ENV = "SMTPAPI_MILTER_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class SmtpapiConfig:
    """``[smtpapi]``: what gets tracked and how tracked URLs look."""

    open_tracking_enabled: bool = False
    click_tracking_enabled: bool = False
    open_tracking_scheme: Literal["http", "https"] = "http"
    click_tracking_scheme: Literal["http", "https"] = "http"
    tracking_domain: str = "localhost:8080"
    tracking_link_expiry: int = 31536000
    initial_open_pixel_tracking: bool = False
    click_tracking_text: bool = True
    skip_url_text_links: bool = False
    track_dkim_signed: bool = False
    # RFC 8058 one-click List-Unsubscribe headers on non-transactional mail (list_unsubscribe.py).
    list_unsubscribe: bool = False
    # The header families read (vendor_headers/): "x-msys-api", "x-smtpapi" (SendGrid),
    # "mailgun", "postmark". A family not listed passes through untouched.
    accept_headers: list[str] = field(default_factory=lambda: ["x-msys-api"])
    # Envelope sender domain for out-of-band bounces and complaints (bounces_in/); "": off.
    bounce_domain: str = ""
    multi_recipient: Literal["auto", "defer", "split", "shared"] = "auto"
    reinject_to: str = ""  # empty: no re-injection listener (auto then shares one body)
    max_tracked_size: int = 20 * 1024 * 1024
    # Links tracked per top part; the rest stay as they are (bounds a part of bare links).
    max_tracked_links: int = 2000
    # Postfix's message_size_limit: a message whose tracked form would be larger goes out
    # untracked (Postfix would refuse it after the injection was recorded). 0: no limit.
    mta_message_size_limit: int = 10240000
    node_id: int = 0
    listener: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_listener(self, name: str | None) -> SmtpapiConfig:
        """The settings in force for MTA listener ``name`` (Postfix ``{daemon_name}``)."""
        overrides = self.listener.get(name or "")
        if not overrides:
            return self
        return dataclasses.replace(self, **overrides)


# Keys a [smtpapi.listener.NAME] table may override: the per-message tracking options.
LISTENER_KEYS = frozenset(
    f.name
    for f in dataclasses.fields(SmtpapiConfig)
    if f.name
    not in {
        "listener",
        "node_id",
        "reinject_to",
        "max_tracked_size",
        "max_tracked_links",
        "mta_message_size_limit",
    }
)


@dataclass(frozen=True)
class MilterConfig:
    """``[milter]``: the libmilter socket and how failures are answered."""

    socket: str = "inet:8890@127.0.0.1"
    timeout: int = 600
    # Processes sharing the socket: Python runs one message at a time per process, so one
    # per CPU core lets the milter keep up with the MTA. 0 means one per core.
    workers: int = 1
    on_error: Literal["tempfail", "accept"] = "tempfail"
    spool_memory_limit: int = 1024 * 1024
    # Messages loaded and rewritten at once; the rest wait their turn at end of message.
    # One: under the GIL a second would not finish sooner, and two rewrites interleaving in
    # one process cost more CPU (milter bench, twice 10 rounds against 2: merge 1.78 against
    # 1.90 and 1.77 against 1.87 ms a message, 3-5 % more messages/s). A body that takes
    # long (0.5 s for 20 MiB of links, bench/hostile_bench.py) holds up the worker's others;
    # data-phase policies and the suppression check run before a slot is taken.
    max_concurrent_rewrites: int = 1
    # Distinct bodies (up to 1 MiB each) whose analysis a worker keeps: a newsletter comes
    # one transaction per recipient, the same body each time. 0 analyses every message anew.
    analysis_cache: int = 8
    metrics_listen: str = "127.0.0.1:9890"


@dataclass(frozen=True)
class PolicyConfig:
    """``[policy]``: where policy modules live."""

    directory: str = "/etc/smtpapi-milter/policies"
    timeout: float = 10.0


@dataclass(frozen=True)
class TrackerConfig:
    """``[engagement_tracker]``: the HTTP tracker and the link-token keys."""

    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:8081"
    admin_token: str = ""
    admin_hosts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    key_file: str = ""
    click_tracking_include_metadata: bool = True
    trusted_proxies: list[str] = field(default_factory=list)
    workers: int = 2
    header_timeout: int = 10
    flood_window: float = 60.0
    flood_token_hourly_limit: int = 100


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: the event store."""

    store: str = ""
    retention: int = 0
    webhook_batch_size: int = 10_000
    webhook_batch_seconds: float = 30.0


@dataclass(frozen=True)
class MaillogConfig:
    """``[maillog]``: the MTA log follower (delivery outcomes, SPEC 13); off by default."""

    source: str = ""  # "", "journald" or the absolute path of a log file
    format: Literal["postfix", "sendmail"] = "postfix"
    record_unknown: bool = False
    bounce_rules: str = ""
    journal_directory: str = ""  # journald: "" = the system journal
    # 100000 rather than 20000: over bench/maillog_bench.py's 200,000 lines, 41 MB written
    # to the WAL instead of 53 (index pages written again by each commit); the lines of a
    # batch in memory are about 15 MB, and only while catching up (an idle log's are few).
    batch_lines: int = 100_000
    poll_interval: float = 0.5


@dataclass(frozen=True)
class SuppressionConfig:
    """``[suppression]``: the suppression list (SPEC 14). ``bounce_classes``: the bounce
    classes whose bounces (from the maillog follower) suppress the recipient; SparkPost's hard
    bounces, 10 (Invalid Recipient) and 30 (Generic Bounce: No RCPT), by default."""

    bounce_classes: list[int] = field(default_factory=lambda: [10, 30])

    # How long a worker trusts what it last read about a recipient: the bound on how late an
    # unsubscribe (or a removal) takes effect in the milter.
    cache_seconds: float = 60.0


@dataclass(frozen=True)
class WebhookConfig:
    """One ``[[webhooks]]`` endpoint.

    ``name`` (optional) identifies the endpoint's stored delivery cursor; without it the URL
    does, so changing the URL of a named endpoint keeps its place in the event stream.
    """

    url: str = ""
    name: str = ""
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    password: str = ""
    token: str = ""
    hmac_secret: str = ""
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    """The whole configuration; build it with :func:`load_config`."""

    state_dir: str = "/var/lib/smtpapi-milter"
    smtpapi: SmtpapiConfig = field(default_factory=SmtpapiConfig)
    milter: MilterConfig = field(default_factory=MilterConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    engagement_tracker: TrackerConfig = field(default_factory=TrackerConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    webhooks: list[WebhookConfig] = field(default_factory=list)
    maillog: MaillogConfig = field(default_factory=MaillogConfig)
    suppression: SuppressionConfig = field(default_factory=SuppressionConfig)
    source: str = "(defaults)"

    @property
    def event_store_url(self) -> str:
        return self.events.store or f"sqlite:///{Path(self.state_dir) / 'events.sqlite3'}"


def config_path(explicit: str | None) -> tuple[str, bool]:
    """The file to read and whether it must exist (given explicitly or by environment)."""
    if explicit:
        return explicit, True
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV], True
    return DEFAULT_CONFIG_PATH, False


def load_config(path: str | None = None) -> Config:
    """Read, type-check and return the configuration.

    With no ``path`` the environment variable or the default location is used; a missing
    default file means "all defaults", a missing named file is an error.
    """
    path, required = config_path(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(table, path)


def parse_config(table: dict[str, Any], path: str = "(inline)") -> Config:
    """Build a :class:`Config` from an already parsed TOML table."""
    table = dict(table)
    smtpapi = dict(table.get("smtpapi", {})) if isinstance(table.get("smtpapi"), dict) else None
    if smtpapi is not None:
        listeners = smtpapi.pop("listener", {})
        smtpapi["listener"] = _parse_listeners(listeners, path)
        table["smtpapi"] = smtpapi
    webhooks = table.pop("webhooks", [])
    if not isinstance(webhooks, list):
        raise ConfigError(f"{path}: 'webhooks' must be an array of tables ([[webhooks]])")
    config = _build(Config, table, path, "")
    hooks = [_build(WebhookConfig, w, path, f"webhooks[{i}].") for i, w in enumerate(webhooks)]
    for i, hook in enumerate(hooks):
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: 'webhooks[{i}].url' must be an http(s) URL")
    config = dataclasses.replace(config, webhooks=hooks, source=path)
    _check_values(config, path)
    return _check_addresses(config, path)


def _check_addresses(config: Config, path: str) -> Config:
    """Listen addresses parsed strictly (addresses.py); the milter socket in libmilter's form."""

    def parsed(key: str, value: str, parse: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: '{key}' {value!r} {exc}") from None

    socket = str(parsed("milter.socket", config.milter.socket, milter_socket))
    parsed("milter.metrics_listen", config.milter.metrics_listen, listen_address)
    for key in ("listen", "admin_listen"):
        parsed(f"engagement_tracker.{key}", getattr(config.engagement_tracker, key), listen_address)
    for i, network in enumerate(config.engagement_tracker.trusted_proxies):
        parsed(f"engagement_tracker.trusted_proxies[{i}]", network, _network)
    return dataclasses.replace(config, milter=dataclasses.replace(config.milter, socket=socket))


def _network(text: str) -> Any:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("is not a network: write an address or CIDR, e.g. 10.0.0.0/8") from None


def _parse_listeners(listeners: Any, path: str) -> dict[str, dict[str, Any]]:
    if not isinstance(listeners, dict):
        raise ConfigError(f"{path}: 'smtpapi.listener' must be a table of [smtpapi.listener.NAME]")
    result = {}
    for name, overrides in listeners.items():
        prefix = f"smtpapi.listener.{name}."
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: '{prefix[:-1]}' must be a table")
        for key in overrides:
            if key not in LISTENER_KEYS:
                raise ConfigError(f"{path}: unknown key '{prefix}{key}'")
        # Type-check the overrides against SmtpapiConfig's own field types.
        checked = _build(SmtpapiConfig, overrides, path, prefix)
        result[name] = {key: getattr(checked, key) for key in overrides}
    return result


def _build(cls: type, table: Any, path: str, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: '{prefix[:-1]}' must be a table")
    hints = typing.get_type_hints(cls)
    # Config.source is where the file was read from, not a key ([maillog] source is).
    fields = {f.name: f for f in dataclasses.fields(cls) if (cls, f.name) != (Config, "source")}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, path, f"{prefix}{key}.")
        else:
            values[key] = _check_type(value, hint, path, f"{prefix}{key}")
    return cls(**values)


def _check_type(value: Any, hint: Any, path: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{path}: '{key}' must be one of {choices}, not {value!r}")
        return value
    if origin in (list, types.GenericAlias) or hint is list:
        (item,) = typing.get_args(hint) or (str,)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{path}: '{key}' must be a list of {item.__name__}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a table")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int; an int option given `true` is a mistake worth naming.
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: '{key}' must be {_type_name(hint)}, not {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", str: "a string", float: "a number"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _check_values(config: Config, path: str) -> None:
    s = config.smtpapi
    for key in ("tracking_link_expiry", "max_tracked_size", "node_id", "mta_message_size_limit"):
        if getattr(s, key) < 0:
            raise ConfigError(f"{path}: 'smtpapi.{key}' must not be negative")
    for key in ("spool_memory_limit", "max_concurrent_rewrites"):
        if getattr(config.milter, key) < 1:
            raise ConfigError(f"{path}: 'milter.{key}' must be at least 1")
    if s.max_tracked_links < 1:
        raise ConfigError(f"{path}: 'smtpapi.max_tracked_links' must be at least 1")
    if config.milter.analysis_cache < 0:
        raise ConfigError(f"{path}: 'milter.analysis_cache' must not be negative")
    if not 0 <= config.suppression.cache_seconds <= 86400:
        raise ConfigError(f"{path}: 'suppression.cache_seconds' must be between 0 and 86400")
    _check_reinjection(s, path)
    _check_accept_headers(s, path)
    if s.node_id > 1023:
        raise ConfigError(f"{path}: 'smtpapi.node_id' must be between 0 and 1023")
    if not s.tracking_domain or any(c in s.tracking_domain for c in "/?#@ \t"):
        raise ConfigError(f"{path}: 'smtpapi.tracking_domain' must be a host[:port]")
    _check_bounce_domains(s, path)
    for name, overrides in s.listener.items():
        domain = overrides.get("tracking_domain")
        if domain is not None and (not domain or any(c in domain for c in "/?#@ \t")):
            raise ConfigError(
                f"{path}: 'smtpapi.listener.{name}.tracking_domain' must be a host[:port]"
            )
    for i, key in enumerate(config.engagement_tracker.keys):
        kid, sep, secret = key.partition(":")
        if not sep or not kid or not secret:
            raise ConfigError(
                f"{path}: 'engagement_tracker.keys[{i}]' must look like \"ID:BASE64URL_32_BYTES\""
            )
    if not 0 <= config.milter.workers <= 256:
        raise ConfigError(f"{path}: 'milter.workers' must be between 0 (one per core) and 256")
    if config.policy.timeout < 0:
        raise ConfigError(f"{path}: 'policy.timeout' must not be negative (0: no limit)")
    _check_maillog(config.maillog, path)
    _check_bounce_classes(config.suppression.bounce_classes, path)
    store = config.events.store
    if store and not store.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"{path}: 'events.store' must be sqlite:///PATH or postgresql://...")
    if store.startswith("sqlite:") and "?" in store:
        query = dict(p.partition("=")[::2] for p in store.partition("?")[2].split("&") if p)
        if set(query) - {"synchronous"} or query.get("synchronous", "full") not in (
            "full",
            "normal",
        ):
            raise ConfigError(
                f"{path}: 'events.store' takes only ?synchronous=full or ?synchronous=normal"
            )


def _check_bounce_domains(s: SmtpapiConfig, path: str) -> None:
    domains = {"smtpapi": s.bounce_domain}
    domains |= {f"smtpapi.listener.{n}": o.get("bounce_domain", "") for n, o in s.listener.items()}
    for where, domain in domains.items():
        # An all-digit last label is an IP address (no MX, no valid envelope sender).
        if domain and (not _DOMAIN.fullmatch(domain) or domain.rpartition(".")[2].isdigit()):
            raise ConfigError(
                f"{path}: '{where}.bounce_domain' {domain!r} must be a domain name (no port, "
                'no "@"), e.g. "bounces.example.com"'
            )


_DOMAIN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _check_reinjection(s: SmtpapiConfig, path: str) -> None:
    """``split`` needs the re-injection listener: say so at load, not at the first message."""
    modes = {"smtpapi": s.multi_recipient}
    modes |= {f"smtpapi.listener.{n}": o.get("multi_recipient") for n, o in s.listener.items()}
    for where, mode in modes.items():
        if mode == "split" and not s.reinject_to:
            raise ConfigError(
                f"{path}: '{where}.multi_recipient' = \"split\" needs 'smtpapi.reinject_to', "
                'the MTA listener without this milter (e.g. "127.0.0.1:10026")'
            )


def _check_accept_headers(s: SmtpapiConfig, path: str) -> None:
    from .vendor_headers.registry import FAMILY_NAMES

    lists = {"smtpapi": s.accept_headers}
    lists |= {f"smtpapi.listener.{n}": o.get("accept_headers") for n, o in s.listener.items()}
    for where, families in lists.items():
        for i, family in enumerate(families or ()):
            if family not in FAMILY_NAMES:
                raise ConfigError(
                    f"{path}: '{where}.accept_headers[{i}]' {family!r} is not a header family "
                    f"(one of {', '.join(map(repr, FAMILY_NAMES))})"
                )


def _check_bounce_classes(classes: list[int], path: str) -> None:
    from .delivery.bounce_class import BOUNCE_CLASSES

    for i, number in enumerate(classes):
        if number not in BOUNCE_CLASSES:
            raise ConfigError(
                f"{path}: 'suppression.bounce_classes[{i}]' {number!r} is not a bounce class "
                f"(one of {', '.join(map(str, BOUNCE_CLASSES))})"
            )


def _check_maillog(maillog: MaillogConfig, path: str) -> None:
    if maillog.source not in ("", "journald") and not maillog.source.startswith("/"):
        raise ConfigError(
            f"{path}: 'maillog.source' {maillog.source!r} must be \"journald\", the absolute "
            'path of the MTA\'s log file, or "" (off)'
        )
    if maillog.bounce_rules and not maillog.bounce_rules.startswith("/"):
        raise ConfigError(
            f"{path}: 'maillog.bounce_rules' {maillog.bounce_rules!r} must be an absolute path"
        )
    if maillog.batch_lines < 1 or maillog.poll_interval <= 0:
        raise ConfigError(
            f"{path}: 'maillog.batch_lines' and 'maillog.poll_interval' must be positive"
        )
