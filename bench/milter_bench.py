"""Postfix throughput with our milter vs a zero-cost tracking pymilter, side by side (SPEC 11).

Bars: messages/second delivered with smtpapi-milter (open and click tracking on) >= 0.8 x the
same Postfix with ``bench/zero_cost_milter.py`` when every body is the same (bulk), and
>= 0.7 x on mail-merged copies (``bench/mail_merge.py``: each names its reader and carries
the reader's own account and preference links). The floor takes the recipients and every
header, deletes X-MSYS-API and puts in the tracked body our pipeline made for that message
beforehand: everything a tracking milter makes Postfix do, at no cost of its own.

One private Postfix with two smtpd listeners that differ only in ``smtpd_milters``: one
points at our milter, one at the floor, both over unix sockets (see the note on loopback TCP
in passthrough_milter.py). Everything is relayed to Postfix's ``smtp-sink`` (C, throws mail
away), so the sink costs next to nothing; a message counts once Postfix logged
``status=sent`` for it, i.e. it was delivered, not just accepted. A minimal asyncio client
(mail_merge.send) sends each load over parallel sessions. Runs alternate (bulk ours, bulk
floor, merge ours, merge floor; the next round starts each load with the floor, and so on)
so the milters see the same machine state and neither always runs first; the best run of
each is compared. Each run prints the milter processes' CPU per message (utime + stime
from /proc) beside the rate: the machine is shared, CPU time is the steadier figure.

Bulk sends one message, so our milter's analysis cache (``[milter] analysis_cache``) finds
every body after the first already analysed, as for a newsletter that goes out one
transaction per recipient. Mail merge is the other common case, every body different.

Before timing, one message through each listener goes to a capture server instead of the
sink (recipient domain ``verify.test``) and is checked: ours tracked every link (bulk and a
mail-merged copy), the floor deleted X-MSYS-API and delivered the tracked body.

``--suppressed N`` loads N entries into the suppression list first (none of them a recipient
of the bench) and ``--distinct-recipients`` numbers each bulk message's recipient, so no
message finds its recipient in the milter's suppression cache: every one pays the list's
lookup, the worst case (SPEC 14).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

import mail_merge  # noqa: E402
from bars import bar  # noqa: E402
from smtpapi_milter.cli import run_message  # noqa: E402
from smtpapi_milter.config import load_config  # noqa: E402
from smtpapi_milter.events.store import open_store  # noqa: E402
from smtpapi_milter.message_file import parse_message_file  # noqa: E402
from smtpapi_milter.pipeline import Pipeline  # noqa: E402
from smtpapi_milter.policy import PolicySet  # noqa: E402
from smtpapi_milter.sandbox.capture import CaptureServer  # noqa: E402
from smtpapi_milter.sandbox.ports import deadline_in, free_port, wait_for_unix_socket  # noqa: E402
from smtpapi_milter.sandbox.postfix import PrivatePostfix, postfix_command  # noqa: E402
from smtpapi_milter.suppression.store import entry_row, suppress_rows  # noqa: E402
from smtpapi_milter.tokens import TokenCodec  # noqa: E402
from tests import corpus  # noqa: E402
from tests.harness.smtpapi import toml  # noqa: E402
from tests.oracle import judge  # noqa: E402

NEWSLETTER = "html/colorlib/14__index.html"  # 83 KB, 25 links before realistic() adds URLs
SENDER, RCPT, VERIFY_RCPT = "news@example.com", "jane.doe@example.org", "check@verify.test"
BULK_BAR, MERGE_BAR = 0.8, 0.7
_SENT = re.compile(rb"status=sent")
_FAILED = re.compile(rb"status=(deferred|bounced)|milter-reject|reject:")


def newsletter() -> bytes:
    """The realistic newsletter: multipart/alternative, quoted-printable, tracking on."""
    html = corpus.realistic((corpus.CORPUS / NEWSLETTER).read_bytes())
    return corpus.wrap_html(html, "quoted-printable", corpus.TRACK_ALL)


class LogCounter:
    """Counts delivered (and failed) messages in a Postfix log, reading only what is new."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.sent = 0
        self.failures: list[bytes] = []

    def poll(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
            self.offset += len(data)
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                if _SENT.search(line) and VERIFY_RCPT.encode() not in line:
                    self.sent += 1
                elif _FAILED.search(line):
                    self.failures.append(line)
        return self.sent

    def wait_for(self, count: int, timeout: float) -> float:
        """Wait until ``count`` deliveries are logged; return the time.monotonic() seen."""
        deadline = deadline_in(timeout)
        while self.poll() < count:
            if self.failures:
                raise RuntimeError(b"\n".join(self.failures[:5]).decode(errors="replace"))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.sent} of {count} delivered within {timeout} s")
            time.sleep(0.01)
        return time.monotonic()


def start_ours(
    workdir: Path,
    workers: int,
    name: str = "ours",
    cache: int | None = None,
    tree: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``smtpapi-milter milter`` (supervisor and workers) on a unix socket, tracking by header;
    ``cache`` None keeps the default analysis cache; ``tree``: the source tree to run."""
    socket = workdir / f"{name}.sock"
    config = workdir / f"{name}.toml"
    milter: dict[str, object] = {"socket": f"unix:{socket}", "workers": workers}
    if cache is not None:
        milter["analysis_cache"] = cache
    sections = {"milter": milter, "policy": {"directory": str(workdir)}}
    # One state directory: both of ours share the link key and the event store.
    config.write_text(toml(sections, {"state_dir": str(workdir / "state")}))
    log = (workdir / f"{name}.log").open("ab")
    command = [sys.executable, "-m", "smtpapi_milter.cli", "milter", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(tree / "milter")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, socket, config


def start_floor(workdir: Path, bodies: Path) -> tuple[subprocess.Popen[bytes], Path]:
    socket = workdir / "zero-cost.sock"
    command = [sys.executable, str(ROOT / "bench" / "zero_cost_milter.py"), f"unix:{socket}"]
    return subprocess.Popen([*command, str(bodies)]), socket


def wait_for_socket(socket: Path, process: subprocess.Popen[bytes]) -> None:
    wait_for_unix_socket(socket, deadline_in(30))
    if process.poll() is not None:
        raise RuntimeError(f"milter on {socket} exited with {process.returncode}")
    # Postfix's smtpd runs as user postfix; the milter (root here) made the socket 0755.
    socket.chmod(0o666)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_sink(port: int) -> subprocess.Popen[bytes]:
    # -u: drop root after binding; 256: listen backlog.
    command = [postfix_command("smtp-sink"), "-u", "nobody", f"127.0.0.1:{port}", "256"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds used so far by process ``pid`` and its descendants still
    running."""
    user = system = 0
    for member in _family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def _family(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                found += _family(int(child))
    return found


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy so far (all cores, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def verify_ours(port: int, capture: CaptureServer, message: bytes, codec: TokenCodec) -> str:
    """Send one message to the capture server through our listener and judge it."""
    delivered = _deliver(port, capture, message)
    # Postfix put one Received field on top; the rest is what our milter made of it.
    after = re.sub(rb"\AReceived:.*?\r\n(?![ \t])", b"", delivered, count=1, flags=re.S)
    report = judge(message, after, codec)  # raises if anything but the links changed
    if report.pixels != 1 or report.html_links < 25:
        raise RuntimeError(f"our milter did not track the newsletter: {report}")
    return f"{report.html_links} html + {report.text_links} text links and the pixel tracked"


def verify_floor(port: int, capture: CaptureServer, message: bytes, tracked: bytes) -> str:
    """Send one message through the floor: X-MSYS-API gone, the tracked body delivered."""
    delivered = _deliver(port, capture, message)
    head, body = delivered.split(b"\r\n\r\n", 1)
    if re.search(rb"^x-msys-api:", head, re.I | re.M):
        raise RuntimeError("zero-cost milter left X-MSYS-API in")
    if body != tracked:
        raise RuntimeError("zero-cost milter did not deliver the tracked body")
    return "X-MSYS-API deleted, tracked body delivered"


def _deliver(port: int, capture: CaptureServer, message: bytes) -> bytes:
    capture.clear()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail(SENDER, [VERIFY_RCPT], message)
    (delivered,) = capture.wait_for(1, timeout=60)
    return delivered.data


def tracked_bodies(config: Path, messages: list[tuple[str, bytes]], directory: Path) -> None:
    """The floor's bodies: what the real pipeline (our configuration and link key) makes of
    each message for its recipient, one file per recipient."""
    loaded = load_config(str(config))
    pipeline = Pipeline(loaded, PolicySet.load(loaded.policy.directory), codec_for(config))
    directory.mkdir()
    for rcpt, message in messages:
        parsed = parse_message_file(message)
        copy = run_message(pipeline, parsed.headers, parsed.body, rcpt, SENDER).copies[0]
        if copy.body is None:
            raise RuntimeError(f"the pipeline did not track the message for {rcpt}")
        (directory / rcpt).write_bytes(copy.body)


def codec_for(config: Path) -> TokenCodec:
    return TokenCodec.from_config(load_config(str(config)), create=False)


def run(port: int, load: list[tuple[str, bytes]], sessions: int, counter: LogCounter) -> float:
    """Send ``load`` (recipient, wire bytes) through listener ``port``; messages/second
    delivered (logged ``status=sent`` by Postfix)."""
    before = counter.poll()
    started = time.monotonic()
    accepted = mail_merge.send(port, SENDER, load, sessions)
    if accepted != len(load):
        raise RuntimeError(f"{accepted} of {len(load)} messages accepted")
    finished = counter.wait_for(before + len(load), timeout=300)
    return len(load) / (finished - started)


def listeners(sockets: dict[str, Path]) -> tuple[dict[str, int], str]:
    ports = {name: free_port() for name in sockets}
    master = "".join(
        f"127.0.0.1:{ports[name]} inet n - n - - smtpd\n  -o smtpd_milters=unix:{socket}\n"
        for name, socket in sockets.items()
    )
    return ports, master


@dataclass
class Bench:
    """Everything running for one benchmark: both milters, their listeners, the loads."""

    ports: dict[str, int]
    milters: dict[str, subprocess.Popen[bytes]]
    loads: dict[str, list[tuple[str, bytes]]]  # name -> (recipient, wire bytes)
    counter: LogCounter
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # ms/msg per run


def bulk_load(message: bytes, count: int, distinct: bool) -> list[tuple[str, bytes]]:
    data = mail_merge.wire(message)
    if not distinct:
        return [(RCPT, data)] * count
    local, domain = RCPT.split("@")
    return [(f"{local}{n}@{domain}", data) for n in range(count)]


def set_up(
    stack: contextlib.ExitStack,
    workdir: Path,
    messages: int,
    workers: int,
    distinct: bool = False,
    before: Path | None = None,
) -> Bench:
    """Start both milters, the sink, the capture server and Postfix; check both milters."""
    workdir.chmod(0o755)  # smtpd (user postfix) must reach the sockets in here
    bulk = newsletter()
    template = corpus.realistic((corpus.CORPUS / NEWSLETTER).read_bytes())
    started = time.monotonic()
    merged = mail_merge.copies(template, messages)
    ours, ours_socket, config = start_ours(workdir, workers)
    stack.callback(stop, ours)
    wait_for_socket(ours_socket, ours)  # the link key exists once ours listens
    bodies = workdir / "bodies"
    tracked_bodies(config, [("default", bulk), *merged], bodies)
    print(
        f"{messages} mail-merged copies and their tracked bodies made in "
        f"{time.monotonic() - started:.1f} s"
    )
    floor, floor_socket = start_floor(workdir, bodies)
    stack.callback(stop, floor)
    sockets = {"ours": ours_socket, "zero-cost": floor_socket}
    milters = {"ours": ours, "zero-cost": floor}
    if before is not None:  # another source tree of ours, for before/after in one run
        earlier, sockets["before"], _ = start_ours(workdir, workers, "before", tree=before)
        stack.callback(stop, earlier)
        wait_for_socket(sockets["before"], earlier)
        milters = {"ours": ours, "before": earlier, "zero-cost": floor}
    sink_port = free_port()
    stack.callback(stop, start_sink(sink_port))
    capture = stack.enter_context(CaptureServer())
    ports, master = listeners(sockets)
    verify_route = f"inline:{{verify.test=relay:[127.0.0.1]:{capture.port}}}"
    postfix = PrivatePostfix(
        relay_port=sink_port, extra_master_cf=master, extra_main_cf={"transport_maps": verify_route}
    )
    stack.enter_context(postfix)
    wait_for_socket(floor_socket, floor)
    codec = codec_for(config)
    print(
        f"message: {len(bulk)} bytes, {NEWSLETTER} as multipart/alternative QP; "
        f"mail-merged copies {len(merged[0][1])} bytes"
    )
    for _ in range(2):  # the second copy comes from the analysis cache
        print(f"ours (bulk):        {verify_ours(ports['ours'], capture, bulk, codec)}")
    print(f"ours (mail merge):  {verify_ours(ports['ours'], capture, merged[0][1], codec)}")
    tracked = (bodies / "default").read_bytes()
    print(f"zero-cost:          {verify_floor(ports['zero-cost'], capture, bulk, tracked)}")
    loads = {
        "bulk": bulk_load(bulk, messages, distinct),
        "merge": [(rcpt, mail_merge.wire(message)) for rcpt, message in merged],
    }
    return Bench(ports, milters, loads, LogCounter(postfix.maillog))


def measure(bench: Bench, rounds: int, sessions: int) -> dict[tuple[str, str], list[float]]:
    """Alternate runs (round 1, bulk: ours, floor; merge: ours, floor; round 2 starts each
    load with the floor: ``round_order``); messages/second delivered per run, keyed by
    (load, milter)."""
    for load in bench.loads.values():  # warm-up: imports, first store write, caches
        for name in bench.milters:
            run(bench.ports[name], load[: 2 * sessions], sessions, bench.counter)
    rates: dict[tuple[str, str], list[float]] = {}
    for round_no in range(1, rounds + 1):
        for load_name, load in bench.loads.items():
            for name in round_order(list(bench.milters), round_no):
                process = bench.milters[name]
                start, busy, wall = cpu_seconds(process.pid), machine_busy(), time.monotonic()
                rate = run(bench.ports[name], load, sessions, bench.counter)
                user, system = (
                    (after - before) / len(load) * 1000
                    for after, before in zip(cpu_seconds(process.pid), start, strict=True)
                )
                cpu = user + system
                busy_seconds = machine_busy() - busy
                busy = busy_seconds / (time.monotonic() - wall) / (os.cpu_count() or 1)
                # Everything but the milter (Postfix, the client, the sink) per message:
                # what the milter makes Postfix do (header callbacks, header and body
                # changes) shows here.
                rest = busy_seconds / len(load) * 1000 - cpu
                rates.setdefault((load_name, name), []).append(rate)
                bench.cpu.setdefault((load_name, name), []).append(cpu)
                print(
                    f"round {round_no} {load_name:5} {name:9} {rate:7.1f} msg/s"
                    f"   milter CPU {cpu:5.2f} ms/msg (user {user:5.2f} sys {system:4.2f})"
                    f"   the rest {rest:5.2f} ms/msg"
                    f"   machine busy {busy * 100:3.0f} %",
                    flush=True,
                )
    return rates


def round_order(names: list[str], round_no: int) -> list[str]:
    """The milters in the order round ``round_no`` (from 1) runs them: turned by one each
    round, so each runs first, second, ... equally often over as many rounds as milters.

    A fixed order (ours first, always) ran ours in every round right after the other load's
    runs. Ours in both places (``--before`` a copy of this tree, 10 rounds; once more with
    the copy setting a malloc limit the workers already had) gave the first place a median
    3.6 % and 2.0 % lower on bulk (0.6 and 0 % on merge), lower in 6 of 10 paired rounds:
    not told apart from chance, but a possible bias of the method that costs nothing to
    remove."""
    turn = (round_no - 1) % len(names)
    return names[turn:] + names[:turn]


def load_suppressions(state_dir: Path, count: int) -> float:
    """``count`` entries in the milters' store (none a bench recipient); seconds it took."""
    started = time.monotonic()
    store = open_store(f"sqlite:///{state_dir / 'events.sqlite3'}")
    try:
        now = time.time()
        rows = [
            entry_row(f"suppressed{n}@list.example", "non_transactional", "manual", "", now)
            for n in range(count)
        ]
        suppress_rows(store, rows)
    finally:
        store.close()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per milter and load")
    parser.add_argument("--messages", type=int, default=600, help="messages per run")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument(
        "--workers", type=int, default=0, help="our [milter] workers (default 0: one per core)"
    )
    parser.add_argument(
        "--suppressed", type=int, default=0, help="entries loaded into the suppression list"
    )
    parser.add_argument(
        "--distinct-recipients",
        action="store_true",
        help="bulk: a new recipient per message, so every lookup misses the milter's cache",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also run ours from this source tree (e.g. a git worktree of an older commit) "
        "as 'before', in the same rounds: before/after on the same machine state; this "
        "tree itself (--before .) measures the bench's own noise",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="smtpapi-milterbench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        before = args.before.resolve() if args.before is not None else None
        bench = set_up(
            stack, Path(tmp), args.messages, args.workers, args.distinct_recipients, before
        )
        if args.suppressed:
            seconds = load_suppressions(Path(tmp) / "state", args.suppressed)
            print(f"suppression list: {args.suppressed} entries loaded in {seconds:.1f} s")
        rates = measure(bench, args.rounds, args.sessions)
    best = {key: max(values) for key, values in rates.items()}
    print(f"{args.messages} messages/run, {args.sessions} sessions, best of {args.rounds}:")
    passed = True
    for load, what, target in (
        ("bulk", "identical bodies", BULK_BAR),
        ("merge", "mail-merged copies", MERGE_BAR),
    ):
        ours, floor = best[(load, "ours")], best[(load, "zero-cost")]
        ratio = ours / floor
        ms = {name: 1000 * args.messages / best[(load, name)] for name in ("ours", "zero-cost")}
        cpu = {name: min(bench.cpu[(load, name)]) for name in bench.milters}
        print(
            f"{load}: ours {ours:.1f} msg/s ({ms['ours']:.0f} ms), zero-cost tracking milter "
            f"{floor:.1f} msg/s ({ms['zero-cost']:.0f} ms), ratio {ratio:.3f}  bar >= {target}"
        )
        # For reading the verdict, not instead of it: the host's speed moves between rounds
        # (one fast floor round sank a best-of-3 ratio to 0.670 while its rounds gave 0.79,
        # 0.65 and 0.81), and each round runs ours and the floor back to back.
        rounds = zip(rates[(load, "ours")], rates[(load, "zero-cost")], strict=True)
        paired = [ours_rate / floor_rate for ours_rate, floor_rate in rounds]
        print(
            f"{load}: round by round (ours / floor of the same round) "
            + ", ".join(f"{value:.3f}" for value in paired)
            + f", median {statistics.median(paired):.3f}"
        )
        print(
            f"{load}: milter CPU, least of {args.rounds} runs: "
            + ", ".join(f"{name} {value:.2f} ms/msg" for name, value in cpu.items())
        )
        if "before" in bench.milters:
            earlier = best[(load, "before")]
            print(f"{load}: before {earlier:.1f} msg/s, ratio {earlier / floor:.3f}")
        bar(
            f"Postfix throughput, tracking on vs zero-cost tracking pymilter, {what}",
            f"{ratio:.3f} ({ours:.0f} vs {floor:.0f} msg/s)",
            f">= {target}",
            ratio >= target,
        )
        passed = passed and ratio >= target
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
