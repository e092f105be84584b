"""Many concurrent large messages through a private Postfix and our milter (SPEC 11 memory).

``concurrent_load`` starts a capture server, the milter as a real process and a Postfix
whose smtpd hands every message to it, warms the milter up with one message, then sends
``clients`` messages of ``size`` bytes at once over SMTP while sampling the resident memory
of the milter's process tree. Used by tests/test_milter_memory.py (a smaller load, in
``make test``) and bench/memory_bench.py (the SPEC's 50 x 10 MB, in ``make bench``).
"""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from smtpapi_milter.config import load_config
from smtpapi_milter.mta import memory

from . import corpus
from .harness.capture import CaptureServer
from .harness.postfix import MESSAGE_SIZE_LIMIT, PrivatePostfix
from .harness.rss import RssSampler, tree_rss
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED

MIB = 1024 * 1024
SENDER, RCPT = "news@example.com", "jane.doe@example.org"


@dataclass
class LoadResult:
    clients: int
    message_bytes: int
    baseline_rss: int  # the milter tree after one small warm-up message
    single_peak: int  # the tree's growth over baseline while one message runs alone
    peak_rss: int  # the largest tree RSS sampled during the concurrent load
    seconds: float
    delivered: int
    tracked: int  # delivered messages that carry tracked links
    spool_memory_limit: int
    rewrite_slots: int
    stated_ceiling: int  # mta/memory.py's ceiling for these connections and message size

    @property
    def ceiling(self) -> int:
        """The bound SPEC 11 asks us to state: memory must not grow with the number of
        concurrent messages beyond each connection's spool and overhead. Rewrites run at most
        ``max_concurrent_rewrites`` at once, each costing what one message costs alone."""
        per_connection = self.spool_memory_limit + memory.CONNECTION_OVERHEAD
        return (
            self.baseline_rss
            + self.rewrite_slots * self.single_peak
            + self.clients * per_connection
            + memory.SLACK
        )

    def summary(self) -> str:
        return (
            f"{self.clients} x {self.message_bytes / MIB:.1f} MiB in {self.seconds:.1f} s: "
            f"milter RSS baseline {self.baseline_rss / MIB:.0f} MiB, one message alone "
            f"+{self.single_peak / MIB:.0f} MiB, peak {self.peak_rss / MIB:.0f} MiB "
            f"(+{(self.peak_rss - self.baseline_rss) / MIB:.0f} MiB), ceiling "
            f"{self.ceiling / MIB:.0f} MiB measured, {self.stated_ceiling / MIB:.0f} MiB stated; "
            f"{self.delivered} delivered, {self.tracked} tracked"
        )


def newsletter(size: int) -> bytes:
    """A quoted-printable newsletter of about ``size`` bytes: a corpus template, repeated."""
    corpus.require()
    html = corpus.realistic(sorted(corpus.html_files())[5].read_bytes())
    return corpus.wrap_html(html * max(1, int(size / 1.05) // len(html)), "quoted-printable")


def _send(port: int, message: bytes, errors: list[str], start: threading.Barrier) -> None:
    start.wait()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=900) as client:
            client.sendmail(SENDER, [RCPT], message)
    except (OSError, smtplib.SMTPException) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def concurrent_load(workdir: Path, clients: int, size: int, **milter: dict) -> LoadResult:
    """Send ``clients`` messages of about ``size`` bytes at once; see the module docstring."""
    message = newsletter(size)
    timeouts = {"connect": "10s", "command": "900s", "content": "900s"}
    # The milter knows the private Postfix's message_size_limit, as an operator would set it.
    sections = {"smtpapi": {"mta_message_size_limit": MESSAGE_SIZE_LIMIT}, **milter}
    with (
        CaptureServer() as capture,
        RunningMilter(workdir, **sections) as running,
        PrivatePostfix(
            smtpd_milters=running.socket, relay_port=capture.port, milter_timeouts=timeouts
        ) as postfix,
    ):
        port, pid = postfix.smtp_port, running.process.pid
        _load(port, capture, [corpus.wrap_html(b"<p>warm-up</p>", "8bit")])
        baseline = tree_rss(pid)
        with RssSampler(pid, interval=0.01) as alone:
            _load(port, capture, [message])
        began = time.monotonic()
        with RssSampler(pid) as sampler:
            delivered = _load(port, capture, [message] * clients)
        seconds = time.monotonic() - began
    config = load_config(str(running.config_path))
    return LoadResult(
        clients=clients,
        message_bytes=len(message),
        baseline_rss=baseline,
        single_peak=alone.peak - baseline,
        peak_rss=sampler.peak,
        seconds=seconds,
        delivered=len(delivered),
        tracked=sum(1 for m in delivered if TRACKED.search(m.data.decode("latin-1"))),
        # As the milter read them: its defaults where the test gave none.
        spool_memory_limit=config.milter.spool_memory_limit,
        rewrite_slots=config.milter.max_concurrent_rewrites,
        stated_ceiling=memory.worker_ceiling(config, clients, baseline, len(message)),
    )


def _load(port: int, capture: CaptureServer, messages: list[bytes]) -> list:
    """Send ``messages`` at once, one connection each; return them as delivered."""
    errors: list[str] = []
    start = threading.Barrier(len(messages))
    threads = [
        threading.Thread(target=_send, args=(port, message, errors, start)) for message in messages
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{len(errors)} of {len(messages)} sends failed: {errors[:3]}"
    delivered = capture.wait_for(len(messages), timeout=600)
    capture.clear()
    return delivered
