"""Postfix throughput with our milter vs a pass-through pymilter, side by side (SPEC 11).

Bar: messages/second delivered with smtpapi-milter (open and click tracking on) >= 0.85 x
the same Postfix with ``bench/passthrough_milter.py`` (buffers the body, hands it back).

One private Postfix with two smtpd listeners that differ only in ``smtpd_milters``: one
points at our milter, one at the pass-through, both over unix sockets (see the note on
loopback TCP in passthrough_milter.py). Everything is relayed to Postfix's ``smtp-sink``
(C, throws mail away), so the sink costs next to nothing; a message counts once Postfix logged
``status=sent`` for it, i.e. it was delivered, not just accepted. Postfix's ``smtp-source``
sends the newsletter over several parallel sessions. Runs alternate (A B C A B C ...) so
the milters see the same machine state; the best run of each is compared.

smtp-source sends one file, so our milter's analysis cache (``[milter] analysis_cache``)
finds every body after the first already analysed, as it does for a newsletter that goes
out one transaction per recipient. A third listener runs our milter with the cache off
(``ours-nocache``): what bodies personalised per recipient cost, reported beside the bar.

Before timing, one message through each listener goes to a capture server instead of the
sink (recipient domain ``verify.test``) and is checked: ours tracked every link, the
pass-through delivered the body byte-identical.

``--suppressed N`` loads N entries into the suppression list first (none of them a recipient
of the bench) and ``--distinct-recipients`` numbers each message's recipient (smtp-source
``-N``), so no message finds its recipient in the milter's suppression cache: every one
pays the list's lookup, the worst case (SPEC 14).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from bars import bar  # noqa: E402
from smtpapi_milter.config import load_config  # noqa: E402
from smtpapi_milter.events.store import open_store  # noqa: E402
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
BAR = 0.85
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
    workdir: Path, workers: int, name: str = "ours", cache: int | None = None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``smtpapi-milter milter`` (supervisor and workers) on a unix socket, tracking by header;
    ``cache`` None keeps the default analysis cache."""
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
    env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, socket, config


def start_passthrough(workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    socket = workdir / "passthrough.sock"
    command = [sys.executable, str(ROOT / "bench" / "passthrough_milter.py"), f"unix:{socket}"]
    return subprocess.Popen(command), socket


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


def verify(port: int, capture: CaptureServer, message: bytes, codec: TokenCodec | None) -> str:
    """Send one message to the capture server through listener ``port`` and check it."""
    capture.clear()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail(SENDER, [VERIFY_RCPT], message)
    (delivered,) = capture.wait_for(1, timeout=60)
    body = message.split(b"\r\n\r\n", 1)[1]
    if codec is None:
        if delivered.body != body:
            raise RuntimeError("pass-through milter changed the body")
        return "body byte-identical"
    # Postfix put one Received field on top; the rest is what our milter made of it.
    after = re.sub(rb"\AReceived:.*?\r\n(?![ \t])", b"", delivered.data, count=1, flags=re.S)
    report = judge(message, after, codec)  # raises if anything but the links changed
    if report.pixels != 1 or report.html_links < 25:
        raise RuntimeError(f"our milter did not track the newsletter: {report}")
    return f"{report.html_links} html + {report.text_links} text links and the pixel tracked"


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by process ``pid`` and its descendants still running."""
    ticks = 0
    for member in _family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


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


def run(
    port: int,
    message_file: Path,
    count: int,
    sessions: int,
    counter: LogCounter,
    distinct: bool = False,
) -> float:
    """Send ``count`` messages through listener ``port``; messages/second delivered."""
    before = counter.poll()
    started = time.monotonic()
    command = [
        postfix_command("smtp-source"),
        *("-s", str(sessions), "-m", str(count), "-d"),
        *(["-N"] if distinct else []),
        *("-f", SENDER, "-t", RCPT, "-F", str(message_file)),
        f"127.0.0.1:{port}",
    ]
    result = subprocess.run(command, capture_output=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.decode(errors='replace')}")
    finished = counter.wait_for(before + count, timeout=300)
    return count / (finished - started)


def listeners(sockets: dict[str, Path]) -> tuple[dict[str, int], str]:
    ports = {name: free_port() for name in sockets}
    master = "".join(
        f"127.0.0.1:{ports[name]} inet n - n - - smtpd\n  -o smtpd_milters=unix:{socket}\n"
        for name, socket in sockets.items()
    )
    return ports, master


@dataclass
class Bench:
    """Everything running for one benchmark: two milters, their listeners, the sink's log."""

    ports: dict[str, int]
    milters: dict[str, subprocess.Popen[bytes]]
    message_file: Path
    counter: LogCounter
    distinct: bool = False  # a new recipient per message (smtp-source -N)


def set_up(stack: contextlib.ExitStack, workdir: Path, message: bytes, workers: int) -> Bench:
    """Start both milters, the sink, the capture server and Postfix; check both milters."""
    workdir.chmod(0o755)  # smtpd (user postfix) must reach the sockets in here
    message_file = workdir / "newsletter.eml"
    message_file.write_bytes(message.replace(b"\r\n", b"\n"))  # smtp-source adds CRLF
    ours, ours_socket, config = start_ours(workdir, workers)
    stack.callback(stop, ours)
    uncached, uncached_socket, _ = start_ours(workdir, workers, "ours-nocache", cache=0)
    stack.callback(stop, uncached)
    passthrough, pass_socket = start_passthrough(workdir)
    stack.callback(stop, passthrough)
    sink_port = free_port()
    stack.callback(stop, start_sink(sink_port))
    capture = stack.enter_context(CaptureServer())
    sockets = {"ours": ours_socket, "ours-nocache": uncached_socket, "passthrough": pass_socket}
    ports, master = listeners(sockets)
    verify_route = f"inline:{{verify.test=relay:[127.0.0.1]:{capture.port}}}"
    postfix = PrivatePostfix(
        relay_port=sink_port, extra_master_cf=master, extra_main_cf={"transport_maps": verify_route}
    )
    stack.enter_context(postfix)
    wait_for_socket(ours_socket, ours)
    wait_for_socket(uncached_socket, uncached)
    wait_for_socket(pass_socket, passthrough)
    codec = TokenCodec.from_config(load_config(str(config)), create=False)
    print(f"message: {len(message)} bytes, {NEWSLETTER} as multipart/alternative QP")
    for name in ("ours", "ours-nocache"):  # ours twice: the second copy comes from the cache
        for _ in range(2):
            print(f"{name + ':':13} {verify(ports[name], capture, message, codec)}")
    print(f"passthrough:  {verify(ports['passthrough'], capture, message, None)}")
    milters = {"ours": ours, "ours-nocache": uncached, "passthrough": passthrough}
    return Bench(ports, milters, message_file, LogCounter(postfix.maillog))


def measure(bench: Bench, rounds: int, messages: int, sessions: int) -> dict[str, list[float]]:
    """Alternate runs (ours, passthrough, ours, ...); messages/second delivered per run."""
    for name in bench.milters:  # warm-up: imports, first store write, caches
        run(
            bench.ports[name],
            bench.message_file,
            2 * sessions,
            sessions,
            bench.counter,
            bench.distinct,
        )
    rates: dict[str, list[float]] = {name: [] for name in bench.milters}
    for round_no in range(1, rounds + 1):
        for name, process in bench.milters.items():
            cpu, busy, wall = cpu_seconds(process.pid), machine_busy(), time.monotonic()
            rate = run(
                bench.ports[name],
                bench.message_file,
                messages,
                sessions,
                bench.counter,
                bench.distinct,
            )
            cpu = (cpu_seconds(process.pid) - cpu) / messages * 1000
            busy_seconds = machine_busy() - busy
            busy = busy_seconds / (time.monotonic() - wall) / (os.cpu_count() or 1)
            # Everything but the milter (Postfix, smtp-source, the sink) per message: what
            # the milter makes Postfix do (header callbacks, header and body changes) shows.
            rest = busy_seconds / messages * 1000 - cpu
            rates[name].append(rate)
            print(
                f"round {round_no} {name:12} {rate:8.1f} msg/s   milter CPU {cpu:5.2f} ms/msg"
                f"   the rest {rest:5.2f} ms/msg   machine busy {busy * 100:3.0f} %"
            )
    return rates


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
    parser.add_argument("--rounds", type=int, default=3, help="runs per milter (alternating)")
    parser.add_argument("--messages", type=int, default=400, help="messages per run")
    parser.add_argument("--sessions", type=int, default=8, help="parallel SMTP sessions")
    parser.add_argument(
        "--workers", type=int, default=0, help="our [milter] workers (default 0: one per core)"
    )
    parser.add_argument(
        "--suppressed", type=int, default=0, help="entries loaded into the suppression list"
    )
    parser.add_argument(
        "--distinct-recipients",
        action="store_true",
        help="a new recipient per message: every lookup misses the milter's cache",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="smtpapi-milterbench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        bench = set_up(stack, Path(tmp), newsletter(), args.workers)
        bench.distinct = args.distinct_recipients
        if args.suppressed:
            seconds = load_suppressions(Path(tmp) / "state", args.suppressed)
            print(f"suppression list: {args.suppressed} entries loaded in {seconds:.1f} s")
        rates = measure(bench, args.rounds, args.messages, args.sessions)
    best = {name: max(values) for name, values in rates.items()}
    ratio = best["ours"] / best["passthrough"]
    verdict = "PASS" if ratio >= BAR else "FAIL"
    uncached = best["ours-nocache"] / best["passthrough"]
    print(
        f"{args.messages} messages/run, {args.sessions} sessions, best of {args.rounds}: "
        f"ours {best['ours']:.1f} msg/s, ours with no analysis cache "
        f"{best['ours-nocache']:.1f} msg/s, passthrough {best['passthrough']:.1f} msg/s"
    )
    print(f"ratio ours/passthrough (throughput): {ratio:.3f}  bar >= {BAR}  {verdict}")
    print(f"ratio ours-nocache/passthrough (every body new): {uncached:.3f}")
    bar(
        "Postfix throughput, tracking on vs pass-through pymilter",
        f"{ratio:.3f} ({best['ours']:.0f} vs {best['passthrough']:.0f} msg/s; "
        f"no cache {uncached:.3f})",
        f">= {BAR}",
        ratio >= BAR,
    )
    return 0 if ratio >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
