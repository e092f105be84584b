"""The ``smtpapi-milter`` command: one console script, a subcommand per job (SPEC 9)."""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, logs
from .config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .message_file import parse_message_file
from .pipeline import MessageResult, Pipeline
from .policy import PolicyLoadError, PolicySet
from .replies import SmtpReplyError
from .tokens import TokenCodec

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpapi-milter",
        description="Momentum-compatible SMTP engagement tracking for Postfix and Sendmail.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config_help = f"configuration file (default ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})"
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
    args = build_parser().parse_args(argv)
    # stdout carries messages for `rewrite`: diagnostics go to stderr.
    logs.configure(stream=sys.stderr, level=logging.WARNING)
    try:
        return args.func(args)
    except (ConfigError, PolicyLoadError) as exc:
        print(f"smtpapi-milter: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _load(args: argparse.Namespace) -> tuple[Config, PolicySet]:
    config = load_config(args.config)
    return config, PolicySet.load(config.policy.directory)


def cmd_rewrite(args: argparse.Namespace) -> int:
    config, policies = _load(args)
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
            output = rewrite_bytes(pipeline, data, args.rcpt, args.mail_from, args.listener)
        except SmtpReplyError as exc:
            print(f"{name}: {exc.reply}", file=sys.stderr)
            status = max(status, EXIT_REJECTED)
            continue
        except ValueError as exc:
            print(f"smtpapi-milter: {name}: {exc}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
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
    message = parse_message_file(data)
    result = run_message(pipeline, message.headers, message.body, rcpt, mail_from, listener)
    copy = result.copies[0]
    return message.to_bytes(result.header_edits + copy.header_edits, copy.body)


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
    from .mta import service  # imports pymilter: only the milter needs libmilter

    logs.configure(stream=sys.stdout, level=logging.INFO)
    if args.worker:
        return service.serve(args.config, args.socket)
    service.validate(args.config)  # refuse to start on broken files, naming them
    return service.Supervisor(args.config).run()


def cmd_check(args: argparse.Namespace) -> int:
    config, policies = _load(args)
    codec_note = _describe_keys(config)
    print(f"# effective configuration from {config.source}")
    settings = dataclasses.asdict(config)
    settings.pop("source")
    print(_toml(settings))
    print(f"# policies in {config.policy.directory}: {len(policies.policies)}")
    for line in policies.describe():
        print(f"#   {line}")
    print(f"# link-token keys: {codec_note}")
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
            lines.append(f"{key} = {_toml_value(value)}")
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
