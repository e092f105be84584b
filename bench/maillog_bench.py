"""The log follower against pflogsumm on the same 200,000-line Postfix log, same run (SPEC 13).

Bar: ours, storing every outcome durably (SQLite, synchronous=FULL, each batch's events and
the position in one commit), takes at most 1x the time of Debian's pflogsumm, which also
reads every line (and only counts). The log is made of the line shapes Postfix 3.7 writes
(tests/maillog_lines.py): per message smtpd's connect/client/disconnect, cleanup, qmgr, the
delivery agent's outcome (85% sent, 10% deferred then sent, 5% bounced) and qmgr's removed;
every message has its injection in the store, so every outcome is joined and stored.

Runs alternate (pflogsumm, ours; ``--rounds`` times), ours each time on a fresh copy of the
same store, and the best of each is compared, as the other benches do: single runs of each
gave 0.80x, 0.91x and 1.04x within ten minutes on a shared machine (pflogsumm alone took
2.42-3.26 s).
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from bars import bar  # noqa: E402
from smtpapi_milter import logs  # noqa: E402
from smtpapi_milter.config import MaillogConfig  # noqa: E402
from smtpapi_milter.delivery.bounce_class import BounceClassifier  # noqa: E402
from smtpapi_milter.events.store import open_store  # noqa: E402
from smtpapi_milter.maillog.file_source import FileSource  # noqa: E402
from smtpapi_milter.maillog.follower import Follower  # noqa: E402
from smtpapi_milter.maillog.postfix import PostfixParser  # noqa: E402
from tests import maillog_lines as pf  # noqa: E402

LINES = 200_000


def message(i: int, start: float) -> list[str]:
    when = start + i * 0.05
    qid = f"{0x4F000000 + i:X}"
    rcpt = f"reader{i}@example.org"
    lines = [pf.line(when, "smtpd", 10650, "connect from localhost[127.0.0.1]")]
    lines += pf.received(when, qid, "news@example.com")
    lines.append(
        pf.line(
            when,
            "smtpd",
            10650,
            "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        )
    )
    kind = i % 20
    if kind < 17:
        lines.append(pf.sent(when, qid, rcpt))
    elif kind < 19:
        lines += [pf.deferred(when, qid, rcpt), pf.sent(when + 60, qid, rcpt)]
    else:
        lines.append(pf.bounced(when, qid, rcpt))
    lines.append(pf.removed(when, qid))
    return lines


def injection(i: int, start: float) -> dict:
    qid = f"{0x4F000000 + i:X}"
    return {
        "type": "injection",
        "event_id": str(1_000_000 + i),
        # Recorded when the milter saw the message, as its log lines say (message() above),
        # not one time for all: a final outcome's event id starts with its injection's time,
        # and with a single time every insert into the event_id index was a random one.
        "timestamp": str(int(start + i * 0.05)),
        "transmission_id": str(7_000_000 + i),
        "message_id": f"{i:020x}",
        "campaign_id": f"campaign-{i % 50}",
        "customer_id": "",
        "rcpt_to": f"reader{i}@example.org",
        "raw_rcpt_to": f"reader{i}@example.org",
        "rcpt_tags": ["newsletter", "bench"],
        "rcpt_meta": {"user": str(i)},
        "msg_from": "news@example.com",
        "friendly_from": "news@example.com",
        "subject": "Autumn news",
        "injection_time": "2026-12-04T10:00:00.000+00:00",
        "delv_method": "esmtp",
        "mta_queue_id": qid,
    }


def build(workdir: Path, lines: int) -> tuple[Path, str, int]:
    start = time.time() - 86400
    log = workdir / "maillog"
    written = messages = 0
    with log.open("w") as out:
        while written < lines:
            chunk = message(messages, start)[: lines - written]
            out.write("\n".join(chunk) + "\n")
            written += len(chunk)
            messages += 1
    pristine = workdir / "injections.sqlite3"
    store = open_store(f"sqlite:///{pristine}")
    for first in range(0, messages, 5000):
        store.record([injection(i, start) for i in range(first, min(messages, first + 5000))])
    store.close()  # the last connection's close checkpoints: the one file holds it all
    return log, pristine, messages


def fresh_store(pristine: Path, round_no: int) -> str:
    """A copy of the store of injections, as no follower has seen it yet: its URL."""
    copy = pristine.with_name(f"events-{round_no}.sqlite3")
    shutil.copyfile(pristine, copy)
    return f"sqlite:///{copy}"


def ours(log: Path, url: str) -> tuple[float, float, int]:
    """Wall and CPU seconds of the follower over the whole log, and the events it stored."""
    store = open_store(url)
    started, cpu = time.perf_counter(), time.process_time()
    follower = Follower(
        store,
        FileSource(log, None),
        PostfixParser(),
        BounceClassifier.load(),
        batch_lines=MaillogConfig().batch_lines,  # as shipped
    )
    follower.run_once()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    return elapsed, cpu, follower.stored


def pflogsumm(log: Path) -> tuple[float, float]:
    """Wall and CPU seconds of pflogsumm over the same log."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [shutil.which("pflogsumm") or "pflogsumm", str(log)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternating")
    args = parser.parse_args()
    logs.configure(stream=sys.stderr, level=logging.WARNING)
    if shutil.which("pflogsumm") is None:
        print("pflogsumm is not installed (make bench-deps installs it)")
        bar("maillog follower vs pflogsumm", "pflogsumm missing", "<= 1x", False)
        return 1
    with tempfile.TemporaryDirectory(prefix="smtpapi-maillog-bench-") as tmp:
        log, pristine, messages = build(Path(tmp), args.lines)
        print(f"{args.lines} lines, {messages} messages, {messages} injections in the store")
        theirs_runs, mine_runs = [], []
        for round_no in range(1, args.rounds + 1):
            theirs_runs.append(pflogsumm(log))
            *timed, stored = ours(log, fresh_store(pristine, round_no))
            mine_runs.append(tuple(timed))
            print(
                f"round {round_no}: pflogsumm {theirs_runs[-1][0]:.2f} s, follower"
                f" {mine_runs[-1][0]:.2f} s ({stored} events stored durably)",
                flush=True,
            )
    (theirs, theirs_cpu), (mine, mine_cpu) = min(theirs_runs), min(mine_runs)
    print(f"pflogsumm: {theirs:.2f} s ({theirs_cpu:.2f} s CPU), best of {args.rounds}")
    print(f"follower: {mine:.2f} s ({mine_cpu:.2f} s CPU), best of {args.rounds}")
    ratio = mine / theirs
    # The bar is on elapsed time; CPU time is shown too, being steadier on a shared machine.
    print(f"ratio: {ratio:.2f}x pflogsumm's time ({mine_cpu / theirs_cpu:.2f}x its CPU time)")
    bar(
        f"maillog follower vs pflogsumm ({args.lines} lines)",
        f"{ratio:.2f}x",
        "<= 1x",
        ratio <= 1.0,
    )
    return 0 if ratio <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
