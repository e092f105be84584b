"""CPU per message of our milter on the throughput bench's loads, in one process (no MTA).

``milter_bench.py`` measures the milter inside Postfix, where the machine is shared and a
run takes minutes. This harness runs the same loads (bulk: one newsletter again and again;
merge: ``mail_merge.copies``) through the same code in this process and reports
``time.process_time`` per message at two levels:

* ``pipeline``: ``Session.end_of_message`` after connect/helo/mail/rcpt, as
  ``smtpapi-milter rewrite`` drives it (no event store, no logging);
* ``milter``: the pymilter front end (``mta.milter.SmtpapiMilter``) called back as libmilter
  would (connect, helo, MAIL, RCPT, each header, the body in 64 KiB chunks, end of message)
  with a context that takes its actions and does nothing, over a real ``MilterState``: the
  SQLite event store (durable commit per message: one session, no group to share it), the
  structlog JSON lines to a file, the Prometheus counters. What libmilter's C side and the
  MTA cost is not in it.

``--profile`` prints cProfile's top functions for each (level, load); ``--breakdown`` the CPU
per message in each stage of the rewrite (STAGES), timed around each call, since cProfile's
cost per call distorts the many small ones. Numbers are CPU time, so they hold on a busy
machine far better than wall time; each figure is the least of ``--rounds`` runs.

``--touch MIB`` writes to that much memory between messages (not timed), so that each one
starts with cold CPU caches, as in the milter under Postfix, whose processes run between the
milter's callbacks. Code run once a message grows most then: the log line, the event store's
insert, the data-phase decision (stop 35's note has the figures).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter"), str(ROOT / "bench")]

import mail_merge  # noqa: E402
import milter_bench  # noqa: E402
from smtpapi_milter.message_file import parse_message_file  # noqa: E402
from tests import corpus  # noqa: E402
from tests.harness.smtpapi import toml  # noqa: E402

CHUNK = 65535  # libmilter's MILTER_CHUNK_SIZE: the body arrives in pieces this big


class NullContext:
    """Stands in for pymilter's milterContext: answers macros, takes actions, keeps nothing."""

    def __init__(self) -> None:
        self.priv: object = None
        self.macros = {"i": "4XqueueID1", "j": "mx.example.com", "{daemon_name}": "smtpd"}

    def getpriv(self) -> object:
        return self.priv

    def setpriv(self, priv: object) -> None:
        self.priv = priv

    def getsymval(self, name: str) -> str | None:
        return self.macros.get(name)

    def setreply(self, *args: object) -> None:
        pass

    def addheader(self, *args: object) -> None:
        pass

    def chgheader(self, *args: object) -> None:
        pass

    def replacebody(self, chunk: bytes) -> None:
        pass

    def delrcpt(self, *args: object) -> None:
        pass

    def chgfrom(self, *args: object) -> None:
        pass


Message = tuple[str, list[tuple[str, bytes]], bytes]  # recipient, header fields, body
Runner = Callable[[str, list[tuple[str, bytes]], bytes], None]  # one message, all stages


def loads(count: int) -> dict[str, list[Message]]:
    """Each load's messages as milter_bench.py makes them, parsed as the MTA hands them over."""
    bulk = milter_bench.newsletter()
    template = corpus.realistic((corpus.CORPUS / milter_bench.NEWSLETTER).read_bytes())
    made = {
        "bulk": [(milter_bench.RCPT, bulk)] * count,
        "merge": mail_merge.copies(template, count),
    }
    parsed = {}
    for name, messages in made.items():
        parsed[name] = []
        for rcpt, message in messages:
            found = parse_message_file(message)
            parsed[name].append((rcpt, found.headers, found.body))
    return parsed


def configure(workdir: Path) -> Path:
    """A configuration as milter_bench.start_ours writes it (defaults, a state directory)."""
    config = workdir / "milter.toml"
    sections = {"milter": {"socket": f"unix:{workdir / 'unused.sock'}"}}
    sections["policy"] = {"directory": str(workdir)}
    config.write_text(toml(sections, {"state_dir": str(workdir / "state")}))
    return config


def pipeline_runner(config: Path) -> Runner:
    from smtpapi_milter.cli import run_message
    from smtpapi_milter.config import load_config
    from smtpapi_milter.pipeline import Pipeline
    from smtpapi_milter.policy import PolicySet

    loaded = load_config(str(config))
    pipeline = Pipeline(loaded, PolicySet.load(loaded.policy.directory))

    def one(rcpt: str, headers: list[tuple[str, bytes]], body: bytes) -> None:
        result = run_message(pipeline, headers, body, rcpt, milter_bench.SENDER)
        assert result.copies[0].body is not None, result.untracked

    return one


def milter_runner(config: Path, log_file: io.TextIOBase) -> Runner:
    import Milter

    from smtpapi_milter import logs
    from smtpapi_milter.mta.metrics import MilterMetrics
    from smtpapi_milter.mta.milter import ACTIONS, SmtpapiMilter
    from smtpapi_milter.mta.state import MilterState

    logs.configure(stream=log_file, level=logging.INFO, json=True)
    state = MilterState.load(str(config))
    state.metrics = MilterMetrics()
    no_reply = Milter.P_NR_HDR | Milter.P_NR_EOH | Milter.P_NR_BODY

    def one(rcpt: str, headers: list[tuple[str, bytes]], body: bytes) -> None:
        ctx = NullContext()
        milter = SmtpapiMilter(state)
        milter._setctx(ctx)
        ctx.priv = milter
        milter.negotiate([ACTIONS, no_reply | Milter.P_HDR_LEADSPC, 0, 0])
        milter.connect("localhost", 0, ("127.0.0.1", 40000))
        milter.hello("client.example.com")
        milter.envfrom_bytes(f"<{milter_bench.SENDER}>".encode())
        milter.envrcpt_bytes(f"<{rcpt}>".encode())
        for name, value in headers:
            milter.header_bytes(name, value)
        milter.eoh()
        for start in range(0, len(body), CHUNK):
            milter.body(body[start : start + CHUNK])
        verdict = milter.eom()
        milter.close()
        assert verdict == Milter.ACCEPT, verdict

    return one


def toucher(mib: int) -> Callable[[], None] | None:
    """What runs between two messages with ``--touch MIB``: a byte written in every 64-byte
    line of ``mib`` MiB, so each message starts with the CPU caches holding little of its
    code and data, as live, where the MTA's processes run between the milter's callbacks.
    None for 0."""
    if mib <= 0:
        return None
    lines = mib * 1024 * 1024 // 64
    memory = bytearray(lines * 64)
    ones = b"\x01" * lines
    return lambda: memory.__setitem__(slice(0, None, 64), ones)


def run_load(one: Runner, load: list[Message], touch: Callable[[], None] | None) -> float:
    """CPU seconds ``load`` took, the touching between messages left out."""
    if touch is None:
        started = time.process_time()
        for message in load:
            one(*message)
        return time.process_time() - started
    spent = 0.0
    for message in load:
        touch()
        started = time.process_time()
        one(*message)
        spent += time.process_time() - started
    return spent


def measure(
    one: Runner, load: list[Message], rounds: int, touch: Callable[[], None] | None = None
) -> float:
    """Least CPU milliseconds per message over ``rounds`` runs of ``load``."""
    return min(run_load(one, load, touch) for _ in range(rounds)) / len(load) * 1000


def profile(one: Runner, load: list[Message], top: int) -> str:
    profiler = cProfile.Profile(time.process_time)  # CPU, as measured: not fsync waits
    profiler.enable()
    for message in load:
        one(*message)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# The stages --breakdown times: (module or class under smtpapi_milter, attribute, label).
STAGES = [
    ("rewrite.analysis", "_analyse", "new body: MIME parse, decode, text-part URLs"),
    ("rewrite.merge_reuse", "scan", "new body: HTML scan (reusing the previous copy's)"),
    ("rewrite.analysis", "html_sites", "new body: HTML sites"),
    ("rewrite.analysis", "text_sites", "new body: text sites"),
    ("rewrite.analysis", "decoded_byte_spans", "new body: byte spans"),
    ("rewrite.qp_reuse", "regions_like", "new body: QP regions"),
    ("pipeline", "_track_part", "each copy: tokens, tracked URLs, QP splice"),
    ("rewrite.analysis.PartAnalysis", "splice", "each copy: QP splice"),
    ("pipeline", "TrackedLinks", "each copy: TrackedLinks (its click token head)"),
    ("rewrite.mime", "apply_changes", "each copy: parts into the body"),
    ("pipeline._CopyBuilder", "_injection", "each copy: injection event"),
    ("vendor_headers", "read", "each message: X-MSYS-API (and vendors') read"),
    ("pipeline._CopyBuilder", "settings", "each message: settings resolved"),
]


def breakdown(one: Runner, load: list[Message], touch: Callable[[], None] | None = None) -> str:
    """CPU microseconds per message in each of STAGES over one run of ``load``."""
    spent: dict[str, float] = {}
    undo = []
    for where, name, label in STAGES:
        owner = _owner(where)
        original = getattr(owner, name)
        undo.append((owner, name, original))

        def timed(*args: object, _f=original, _label=label, **kwargs: object) -> object:
            started = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.process_time() - started

        setattr(owner, name, timed)
    try:
        total = run_load(one, load, touch)
    finally:
        for owner, name, original in undo:
            setattr(owner, name, original)
    lines = [f"{total / len(load) * 1e6:7.0f} us/msg in all"]
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        lines.append(f"{seconds / len(load) * 1e6:7.0f}  {label}")
    return "\n".join(lines)


def _owner(where: str) -> object:
    """The module (or class in it) named ``where`` under smtpapi_milter."""
    parts = where.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module("smtpapi_milter." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            owner = getattr(owner, attribute)
        return owner
    raise ModuleNotFoundError(where)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="messages per run and load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", choices=("pipeline", "milter", "both"), default="both")
    parser.add_argument("--load", choices=("bulk", "merge", "both"), default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile each instead")
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU per message in each stage instead"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--touch",
        type=int,
        default=0,
        metavar="MIB",
        help="touch this many MiB between messages (cold caches, as live; not timed)",
    )
    args = parser.parse_args()
    touch = toucher(args.touch)
    made = loads(args.messages)
    names = list(made) if args.load == "both" else [args.load]
    levels = ["pipeline", "milter"] if args.level == "both" else [args.level]
    with tempfile.TemporaryDirectory(prefix="smtpapi-miltercpu-") as tmp:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tmp)
        config = configure(Path(tmp))
        with contextlib.ExitStack() as stack:
            log_file = stack.enter_context(open(Path(tmp) / "milter.log", "w"))
            runners = {
                "pipeline": lambda: pipeline_runner(config),
                "milter": lambda: milter_runner(config, log_file),
            }
            for level in levels:
                one = runners[level]()
                for name in names:
                    load = made[name]
                    for message in load[:20]:  # warm-up: imports, caches, the store
                        one(*message)
                    if args.profile:
                        print(f"== {level} {name}")
                        print(profile(one, load, args.top))
                    elif args.breakdown:
                        print(f"== {level} {name}")
                        print(breakdown(one, load, touch), flush=True)
                    else:
                        ms = measure(one, load, args.rounds, touch)
                        print(f"{level:8} {name:5} {ms:6.3f} ms CPU/msg", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
