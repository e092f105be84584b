"""The ``smtpapi-milter`` command: one console script, a subcommand per job (SPEC 9)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.utils
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logs, state_owner
from .bounces_in import cli as bounce_in_cli
from .config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .events.query import EVENT_TYPES, MAX_LIMIT, EventQuery, QueryError
from .listen_check import EXIT_CANNOT_LISTEN, ListenError
from .message_file import parse_message_file
from .orphans import die_with_parent
from .pipeline import MessageResult, Pipeline
from .policy import PolicyLoadError, PolicySet
from .replies import SmtpReplyError
from .suppression import command as suppression_command
from .tokens import TokenCodec

# Each command imports what only it needs (the event store, preflight's checks) itself:
# `rewrite` over a directory of messages should not pay at start for what it never uses.
if TYPE_CHECKING:
    from .events.store import EventStore

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpapi-milter",
        description="Momentum-compatible SMTP engagement tracking for Postfix and Sendmail.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config_help = f"configuration file (default ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})"
    # Also before the subcommand (`smtpapi-milter --config F check`); its own dest, because a
    # subcommand's default would overwrite a shared one. main() merges them.
    parser.add_argument("--config", dest="config_first", metavar="FILE", help=config_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help=config_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rewrite = sub.add_parser(
        "rewrite",
        parents=[common],
        help="apply to message files exactly what the milter would",
        description="Run message files through the same pipeline the milter uses (X-MSYS-API, "
        "policies, settings, rewrite) and print the result, or write DIR/<name> with "
        "--out-dir. A message the milter would reject prints its SMTP reply on stderr and "
        "the exit status is 1.",
    )
    rewrite.add_argument("--rcpt", metavar="ADDR", help="envelope recipient (default: To)")
    rewrite.add_argument("--mail-from", metavar="ADDR", help="envelope sender (default: From)")
    rewrite.add_argument(
        "--listener",
        metavar="NAME",
        help="MTA listener name ({daemon_name}) for per-listener settings",
    )
    rewrite.add_argument("--out-dir", metavar="DIR", help="write DIR/<file name> per input")
    rewrite.add_argument("files", nargs="+", metavar="FILE", help="message files ('-' = stdin)")
    rewrite.set_defaults(func=cmd_rewrite)

    milter = sub.add_parser(
        "milter",
        parents=[common],
        help="run the milter (libmilter socket from [milter] socket)",
        description="Run the milter for Postfix or Sendmail. SIGHUP reloads configuration and "
        "policies (a broken file keeps the running set), SIGTERM stops after the connections "
        "in progress. Logs one JSON line per message on stdout.",
    )
    milter.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    milter.add_argument("--socket", help=argparse.SUPPRESS)  # the worker's, under activation
    milter.set_defaults(func=cmd_milter)

    tracker = sub.add_parser(
        "tracker",
        parents=[common],
        help="run the HTTP engagement tracker (pixels, click redirects, events API)",
        description="Serve tracked links on [engagement_tracker] listen and the events API on "
        "admin_listen. Every open and click is stored durably before the answer goes out; "
        "when the event store is down the tracker answers 503. SIGTERM stops, SIGHUP restarts "
        "the workers with the configuration re-read.",
    )
    tracker.add_argument(
        "--listener", choices=["public", "admin", "indexer"], help=argparse.SUPPRESS
    )
    tracker.set_defaults(func=cmd_tracker)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run milter and tracker together, supervised (the single-machine default)",
        description="Start 'milter' and 'tracker' (and 'maillog' when [maillog] source is "
        "set) as child processes and keep them running: a child that dies is restarted; "
        "SIGTERM stops them all; SIGHUP makes them reload.",
    )
    run.set_defaults(func=cmd_run)

    maillog = sub.add_parser(
        "maillog",
        parents=[common],
        help="follow the MTA's log: delivery, delay and bounce events ([maillog] source)",
        description="Read Postfix's or Sendmail's log ([maillog] source: a file, followed "
        "across rotation, or journald) and store one delivery, delay or bounce event per "
        "recipient outcome, joined to the milter's injection. Resumes where it stopped; "
        "SIGTERM stops after committing.",
    )
    maillog.set_defaults(func=cmd_maillog)

    events = sub.add_parser(
        "events",
        parents=[common],
        help="query stored events",
        description="Query the event store. 'table' shows the last --limit matches for people; "
        "'json' prints every match as one flat SparkPost-style event per line, for programs.",
    )
    events.add_argument(
        "--type", action="append", metavar="T", help="event type(s): " + ", ".join(EVENT_TYPES)
    )
    events.add_argument("--campaign", metavar="C", help="campaign id")
    events.add_argument("--rcpt", metavar="R", help="recipient address (any case)")
    events.add_argument(
        "--since", metavar="TIME", help="from TIME: unix seconds, ISO 8601, or an age like 2h, 7d"
    )
    events.add_argument("--until", metavar="TIME", help="before TIME (same forms)")
    events.add_argument(
        "--limit", type=int, metavar="N", help="at most N events (table default: 100)"
    )
    events.add_argument("--format", choices=["table", "json"], default="table")
    events.set_defaults(func=cmd_events)

    erase = sub.add_parser(
        "erase",
        parents=[common],
        help="erase every stored event of one recipient (privacy requests)",
        description="Delete every event whose recipient is ADDR (any case) from the event store. "
        "ADDR's suppression list entries are kept, so it still gets no mail it opted out of "
        "(what the law asks), unless --include-suppression.",
    )
    erase.add_argument("address", metavar="ADDR")
    erase.add_argument(
        "--include-suppression",
        action="store_true",
        help="also remove ADDR from the suppression list (by default its entries are kept)",
    )
    erase.set_defaults(func=cmd_erase)
    suppression_command.register(sub, common)
    bounce_in_cli.register(sub, common)

    demo = sub.add_parser(
        "demo",
        help="show the whole path on this machine: Postfix, milter, tracker, events",
        description="Start a private Postfix wired to the milter, the tracker, send a sample "
        "newsletter over SMTP, show what changed, open and click it over HTTP and print the "
        "events; then stop everything and remove the workspace. Needs root and Postfix.",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep everything running until Enter is pressed"
    )
    listeners = (("milter", "milter"), ("tracker", "tracker"), ("admin", "events API, dashboard"))
    for name, what in listeners:
        demo.add_argument(
            f"--{name}-port",
            type=int,
            metavar="N",
            help=f"the {what} on 127.0.0.1:N (default $SMTPAPI_DEMO_{name.upper()}_PORT, "
            "else a free port)",
        )
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser(
        "check",
        parents=[common],
        help="validate configuration and policies",
        description="Load the configuration and policies, report the first problem or print "
        "the effective settings.",
    )
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()  # when one of our supervisors started this process
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None) is None:  # the subcommand's --config wins when both given
        args.config = args.config_first
    # stdout carries messages for `rewrite`: diagnostics go to stderr.
    logs.configure(stream=sys.stderr, level=logging.WARNING)
    try:
        return args.func(args)
    except (ConfigError, PolicyLoadError) as exc:
        print(f"smtpapi-milter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ListenError as exc:
        print(f"smtpapi-milter: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN


def _load(args: argparse.Namespace) -> tuple[Config, PolicySet]:
    config = load_config(args.config)
    return config, PolicySet.load(config.policy.directory)


def cmd_rewrite(args: argparse.Namespace) -> int:
    config, policies = _load(args)
    state_owner.refuse_root_key(config)  # a key root made would be unreadable by the service
    pipeline = Pipeline(config, policies, TokenCodec.from_config(config))
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    status = EXIT_OK
    for name in args.files:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            print(f"smtpapi-milter: {name}: {exc.strerror}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        try:
            output, result = rewrite_message(
                pipeline, data, args.rcpt, args.mail_from, args.listener
            )
        except SmtpReplyError as exc:
            print(f"{name}: {exc.reply}", file=sys.stderr)
            status = max(status, EXIT_REJECTED)
            continue
        except ValueError as exc:
            print(f"smtpapi-milter: {name}: {exc}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        if result.untracked is not None:  # one line per file: why it comes out unchanged
            print(
                f"{name}: untracked ({result.untracked.reason}): {result.untracked}",
                file=sys.stderr,
            )
        if out_dir is None:
            sys.stdout.buffer.write(output)
            sys.stdout.buffer.flush()
        else:
            (out_dir / ("stdin.eml" if name == "-" else Path(name).name)).write_bytes(output)
    return status


def rewrite_bytes(
    pipeline: Pipeline,
    data: bytes,
    rcpt: str | None = None,
    mail_from: str | None = None,
    listener: str | None = None,
) -> bytes:
    """One message file in, the bytes the recipient would receive out (or SmtpReplyError)."""
    return rewrite_message(pipeline, data, rcpt, mail_from, listener)[0]


def rewrite_message(
    pipeline: Pipeline,
    data: bytes,
    rcpt: str | None = None,
    mail_from: str | None = None,
    listener: str | None = None,
) -> tuple[bytes, MessageResult]:
    """:func:`rewrite_bytes`, with the pipeline's result (what was tracked, or why not)."""
    message = parse_message_file(data)
    result = run_message(pipeline, message.headers, message.body, rcpt, mail_from, listener)
    copy = result.copies[0]
    return message.to_bytes(result.header_edits + copy.header_edits, copy.body), result


def run_message(
    pipeline: Pipeline,
    headers: list[tuple[str, bytes]],
    body: bytes,
    rcpt: str | None,
    mail_from: str | None,
    listener: str | None = None,
) -> MessageResult:
    """Drive every SMTP stage of one message through a fresh session, as the milter would."""
    session = pipeline.session()
    macros = {"{daemon_name}": listener} if listener else {}
    session.connect("127.0.0.1", "localhost", macros)
    session.helo("localhost")
    session.mail_from(mail_from if mail_from is not None else _address(headers, "from") or "")
    recipient = rcpt or _address(headers, "to")
    if not recipient:
        raise ValueError("no recipient: the message has no To address, pass --rcpt")
    session.rcpt(recipient)
    return session.end_of_message(headers, body)


def _address(headers: list[tuple[str, bytes]], name: str) -> str | None:
    values = [v.decode("utf-8", "replace") for k, v in headers if k.lower() == name]
    found = [addr for _, addr in email.utils.getaddresses(values) if "@" in addr]
    return found[0] if found else None


def cmd_milter(args: argparse.Namespace) -> int:
    from . import preflight
    from .mta import service  # imports pymilter: only the milter needs libmilter

    logs.configure(stream=sys.stdout, level=logging.INFO)
    if args.worker:
        return service.serve(args.config, args.socket)
    # What `check` refuses, a start refuses (before any child process).
    preflight.validate(load_config(args.config), ["milter"], starting=True)
    return service.Supervisor(args.config).run()


def cmd_tracker(args: argparse.Namespace) -> int:
    from . import preflight
    from .tracker import server  # the HTTP server is only needed here

    logs.configure(stream=sys.stdout, level=logging.INFO)
    if args.listener:
        return server.serve_listener(args.config, args.listener)
    # What `check` refuses, a start refuses (before any child process).
    preflight.validate(load_config(args.config), ["tracker"], starting=True)
    return server.serve(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from . import preflight
    from .supervise import Supervisor

    logs.configure(stream=sys.stdout, level=logging.INFO)
    # What `check` refuses, a start refuses (before any child process).
    config = load_config(args.config)
    preflight.validate(config, starting=True)
    base = [sys.executable, "-m", "smtpapi_milter.cli"]
    options = ["--config", str(Path(args.config).resolve())] if args.config else []
    names = ("milter", "tracker", "maillog") if config.maillog.source else ("milter", "tracker")
    children = {name: [*base, name, *options] for name in names}
    return Supervisor(children).run()


def cmd_maillog(args: argparse.Namespace) -> int:
    from . import preflight
    from .maillog import service

    logs.configure(stream=sys.stdout, level=logging.INFO)
    config = load_config(args.config)
    if not config.maillog.source:
        print(
            f"smtpapi-milter maillog: [maillog] source is not set in {config.source}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    preflight.validate(config, ["maillog"], starting=True)
    return service.serve(config)


def cmd_events(args: argparse.Namespace) -> int:
    from .events.table import format_table
    from .terminal import terminal_json

    config = load_config(args.config)
    try:
        query = EventQuery.from_text(
            types=args.type,
            campaign=args.campaign,
            rcpt=args.rcpt,
            since=args.since,
            until=args.until,
            limit=min(args.limit or 100, MAX_LIMIT) if args.format == "table" else MAX_LIMIT,
        )
    except QueryError as exc:
        print(f"smtpapi-milter events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = _open_store(config)
    if store is None:
        return EXIT_UNAVAILABLE
    with contextlib.closing(store):
        if args.format == "table":
            print(format_table([event for _, event in query.run(store, newest=True)]))
            return EXIT_OK
        remaining = args.limit
        while remaining is None or remaining > 0:
            rows = query.run(store)
            if remaining is not None:
                rows = rows[:remaining]
                remaining -= len(rows)
            for _, event in rows:
                sys.stdout.write(terminal_json(json.dumps(event, ensure_ascii=False)) + "\n")
            if len(rows) < query.limit:
                break
            query = dataclasses.replace(query, after_id=rows[-1][0])
    sys.stdout.flush()
    return EXIT_OK


def cmd_erase(args: argparse.Namespace) -> int:
    from .events.erasure import NotAnAddress, erasable_address
    from .events.store import StoreUnavailable

    try:
        address = erasable_address(args.address)
    except NotAnAddress as exc:
        print(f"smtpapi-milter erase: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = _open_store(load_config(args.config))
    if store is None:
        return EXIT_UNAVAILABLE
    with contextlib.closing(store):
        try:
            deleted = store.erase_recipient(address, include_suppression=args.include_suppression)
            kept = suppression_command.kept_after_erase(store, address, args.include_suppression)
        except StoreUnavailable as exc:
            print(f"smtpapi-milter erase: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    print(f"erased {deleted} events of {address}; later events of it will not be stored; {kept}")
    return EXIT_OK


def _open_store(config: Config) -> EventStore | None:
    from .events.store import StoreUnavailable, open_store

    try:
        state_owner.enter_store(config)  # never creates a store; root acts as its owner
        return open_store(config.event_store_url)
    except (StoreUnavailable, state_owner.NoStore) as exc:
        print(f"smtpapi-milter: {exc}", file=sys.stderr)
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import walkthrough

    ports = {"milter": args.milter_port, "tracker": args.tracker_port, "admin": args.admin_port}
    return walkthrough.main(keep=args.keep, options=ports)


def cmd_check(args: argparse.Namespace) -> int:
    from . import preflight
    from .config_advice import advice
    from .redaction import redact_settings
    from .tracker.admin_access import describe_token

    config = load_config(args.config)
    policies = preflight.validate(config)  # what a start of the milter and tracker refuses
    codec_note = _describe_keys(config)
    print(f"# effective configuration from {config.source}")
    settings = dataclasses.asdict(config)
    settings.pop("source")
    print(_toml(redact_settings(settings)))  # check's output lands in tickets and chats
    print(f"# policies in {config.policy.directory}: {len(policies.policies)}")
    for line in policies.describe():
        print(f"#   {line}")
    print(f"# link-token keys: {codec_note}")
    print(f"# admin token: {describe_token(config)}")
    for line in advice(config):
        print(f"warning: {line}", file=sys.stderr)
    print("# configuration OK")
    return EXIT_OK


def _describe_keys(config: Config) -> str:
    if config.engagement_tracker.keys or config.engagement_tracker.key_file:
        codec = TokenCodec.from_config(config, create=False)
        return f"{len(codec.key_ids)} configured, signing with {codec.key_ids[0]!r}"
    path = Path(config.state_dir) / "link-keys"
    if path.exists():
        TokenCodec.from_config(config, create=False)
        return f"default key file {path}"
    return f"default key file {path} (created on first start)"


def _toml(table: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML to show settings (strings, numbers, booleans, lists, tables)."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend((f"[{key}]", item) for item in value)
        else:
            lines.append(f"{key} = {toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        if key.startswith("["):
            name = f"{prefix}{key[1:-1]}"
            out += f"\n\n[[{name}]]\n" + _toml(value)
        else:
            name = f"{prefix}{key}"
            body = _toml(value, f"{name}.")
            out += f"\n\n[{name}]\n{body}" if body.strip() else ""
    return out.strip("\n")


def toml_value(value: Any) -> str:
    """A string, number, boolean or list as a TOML value (enough for settings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # A TOML basic string takes JSON's escapes (control characters included).
    return json.dumps(str(value), ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
