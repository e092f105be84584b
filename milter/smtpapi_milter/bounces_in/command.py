"""``smtpapi-milter bounce-in``: one report on standard input, as the MTA's pipe delivers it.

Postfix's ``pipe`` and Sendmail's prog mailer read the exit status as sysexits(3):

- 0: done. The events are stored, or the report was not one to store (no return-path token,
  a token that does not verify, a message that is neither bounce, complaint nor auto-reply,
  or the sending MTA's own DSN for a failure the maillog follower records from its log):
  logged and dropped, because retrying would never change the answer.
- 75 (EX_TEMPFAIL): the store is down or missing, the configuration or key cannot be read, or
  anything else went wrong before the events were committed. The MTA keeps the report and
  pipes it again later, so nothing is lost; the event ids repeat, so nothing doubles either.

The report's envelope recipient (Postfix ``${recipient}``, Sendmail ``$u``) comes as the
argument: a DSN or a bounce goes to the copy's return path, so the token is there. An ARF
report goes to the address registered with the mailbox provider's feedback loop instead; its
token is then read from the enclosed message's Return-Path (and, for any report, from the
returned headers when the argument has none).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

import structlog

from .. import state_owner
from ..config import ConfigError, load_config
from ..delivery.bounce_class import BounceClassifier, BounceRulesError
from ..events.store import StoreError, open_store
from ..suppression.store import suppress_rows
from ..tokens import TokenCodec
from .classify import UNKNOWN, classify
from .events import build_events, find_injection, from_sending_mta, report_key
from .return_path import TOKEN_IN_TEXT, ForgedReturnPath, ReturnPaths, ReturnPathToken
from .suppress import suppression_rows

EX_OK, EX_TEMPFAIL = 0, 75
MAX_REPORT = 50 * 1024 * 1024  # read no further: a report is a few KB, its enclosure at most

log = structlog.get_logger("smtpapi_milter.bounce_in")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as exc:  # whatever it was, the MTA keeps the report and retries
        log.exception("bounce-in failed: the MTA keeps the report and retries", error=str(exc))
        return EX_TEMPFAIL


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        paths = ReturnPaths.from_codec(TokenCodec.from_config(config, create=False))
        classifier = BounceClassifier.load(config.maillog.bounce_rules or None)
    except (ConfigError, BounceRulesError) as exc:
        print(f"smtpapi-milter bounce-in: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    raw = sys.stdin.buffer.read(MAX_REPORT)
    report = classify(raw, classifier)
    try:
        token = _token(paths, args.recipient, report.texts)
    except ForgedReturnPath as exc:
        log.warning("report dropped: forged return path", recipient=args.recipient, why=str(exc))
        return EX_OK
    if token is None:
        log.warning("report dropped: no return-path token in it", recipient=args.recipient)
        return EX_OK
    if report.kind == UNKNOWN:
        log.warning(
            "report dropped: neither a bounce, a complaint nor an auto-reply",
            transmission_id=token.transmission_id,
        )
        return EX_OK
    try:
        state_owner.enter_store(config)
        store = open_store(config.event_store_url)
    except (StoreError, state_owner.NoStore) as exc:
        print(f"smtpapi-milter bounce-in: event store unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    with contextlib.closing(store):
        try:
            count = _store(store, config, report, token, raw)
        except StoreError as exc:
            print(f"smtpapi-milter bounce-in: event store unavailable: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
    if count == 0:
        log.warning("report dropped: it names no failed recipient", kind=report.kind)
    return EX_OK


def _token(paths: ReturnPaths, recipient: str, texts: list[str]) -> ReturnPathToken | None:
    """The token of the address the report was sent to; when that address has none (a
    feedback loop's), the first that verifies in the report and the message it returns.
    A report sent to a token that does not verify is forged, whatever else it quotes."""
    sent_to = TOKEN_IN_TEXT.search(recipient + "@")  # the argument is the local part or all
    if sent_to is not None:
        return paths.verify(sent_to[1])
    return paths.find(*texts)


def _store(store: Any, config: Any, report: Any, token: Any, raw: bytes) -> int:
    injection = find_injection(store, token)
    if config.maillog.source and from_sending_mta(report, injection, raw):
        # The follower records it from the log, as a bounce: once is enough.
        log.warning(
            "report dropped: our MTA's own DSN for a failure the maillog follower records",
            transmission_id=token.transmission_id,
        )
        return -1
    now = time.time()
    events = build_events(report, token, injection, now, report_key(raw))
    if not events:
        return 0
    rows = suppression_rows(events, set(config.suppression.bounce_classes), now)

    def work(cur: Any) -> None:
        # One commit: the events and the entries they ask for are stored together or not.
        store.insert_events(cur, events)
        if rows:
            suppress_rows(store, rows, cur=cur)

    store.transaction(work, write=True)
    return len(events)
