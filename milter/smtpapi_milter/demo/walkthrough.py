"""The demo's steps; see the package docstring. Output is for people: progress and colour."""

from __future__ import annotations

import contextlib
import difflib
import email
import http.client
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from importlib import resources
from pathlib import Path

from ..config import load_config
from ..sandbox.capture import CaptureServer
from ..sandbox.ports import deadline_in, free_port, port_is_free, wait_for_http, wait_for_port
from ..sandbox.postfix import PrivatePostfix
from ..tokens import TokenCodec
from ..tracker.admin_access import admin_token

STEPS = 6
RECIPIENT = "jane.doe@example.org"
HEADER = (
    '{"campaign_id": "autumn-2026", "tags": ["newsletter", "orchard"],'
    ' "metadata": {"customer": "8812", "segment": "regulars"},'
    ' "options": {"open_tracking": true, "click_tracking": true}}'
)
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile"


class Style:
    def __init__(self, colour: bool):
        codes = ("\033[1m", "\033[32m", "\033[31m", "\033[2m", "\033[0m")
        self.bold, self.green, self.red, self.dim, self.off = codes if colour else ("",) * 5


class Demo:
    def __init__(self, keep: bool, colour: bool, pinned: dict[str, int] | None = None):
        self.keep = keep
        self.pinned = pinned or {}
        self.s = Style(colour)
        self.started = time.monotonic()
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        elapsed = time.monotonic() - self.started
        print(
            f"\n{self.s.bold}[{self.step_no}/{STEPS}] {text}{self.s.off} {self.s.dim}"
            f"({elapsed:.1f} s){self.s.off}",
            flush=True,
        )

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="smtpapi-demo-") as tmp:
            work = Path(tmp)
            self.step("Starting smtpapi-milter run (milter + tracker) with a fresh configuration")
            config_path, ports = write_config(work, self.pinned)
            self.note(f"workspace {work} (removed at the end)")
            with supervised(config_path, work / "run.log", ports):
                self.note(
                    f"milter on 127.0.0.1:{ports['milter']}, tracker on "
                    f"127.0.0.1:{ports['tracker']}, events API on 127.0.0.1:{ports['admin']}"
                )
                self.step("Starting a private Postfix with smtpd_milters pointing at the milter")
                with (
                    CaptureServer() as capture,
                    PrivatePostfix(
                        smtpd_milters=f"inet:127.0.0.1:{ports['milter']}", relay_port=capture.port
                    ) as postfix,
                ):
                    self.note(
                        f"Postfix in {postfix.base_dir}, SMTP on 127.0.0.1:{postfix.smtp_port}"
                    )
                    message = newsletter()
                    self.step(f"Sending a newsletter over SMTP to {RECIPIENT}")
                    self.note(f"X-MSYS-API: {HEADER}")
                    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
                        client.send_message(message)
                    (delivered,) = capture.wait_for(1, timeout=60)
                    self.note(
                        f"delivered by Postfix to the capture server: {len(delivered.data)} bytes"
                    )
                self.show_changes(message.as_bytes(), delivered.data)
                self.engage(delivered.data, ports, config_path)
                self.step("The events, as `smtpapi-milter events` shows them")
                events = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "smtpapi_milter.cli",
                        "events",
                        "--config",
                        str(config_path),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                print(events.stdout or events.stderr)
                self.note(
                    "clicks seconds after sending are flagged click_too_fast: at that "
                    "speed it is a link scanner, not a reader"
                )
                # The tracker made this token on first start; the dashboard asks for it once.
                token = admin_token(load_config(str(config_path)), create=False)
                self.note(f"dashboard: http://127.0.0.1:{ports['admin']}/dashboard/")
                self.note(f"admin token (the dashboard asks for it once): {token}")
                self.note(
                    f'events API: curl -H "Authorization: Bearer {token}" '
                    f"http://127.0.0.1:{ports['admin']}/api/v1/events"
                )
                if not self.keep:
                    self.note(
                        "(they go with the clean-up: `smtpapi-milter demo --keep` leaves "
                        "everything running to look at them)"
                    )
                else:
                    self.note(
                        f"JSON lines for programs: smtpapi-milter events --config {config_path}"
                        " --format json"
                    )
                    with contextlib.suppress(EOFError, KeyboardInterrupt):
                        input(
                            "\n      Everything keeps running: press Enter to stop and clean up. "
                        )
        print(
            f"\n{self.s.bold}Done in {time.monotonic() - self.started:.1f} s; every process "
            f"stopped and the workspace removed.{self.s.off}"
        )
        return 0

    def show_changes(self, sent: bytes, delivered: bytes) -> None:
        self.step("What changed in the delivered copy (everything else is byte for byte the same)")
        before, after = html_lines(sent), html_lines(delivered)
        print(f"      X-MSYS-API header in delivered copy: {b'X-MSYS-API' in delivered}")
        matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
        changed = 0
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            if tag == "equal":
                continue
            for old, new in zip(before[a0:a1], after[b0:b1], strict=False):
                changed += 1
                if changed <= 8:
                    print(f"      {self.s.red}- {shorten(old)}{self.s.off}")
                    print(f"      {self.s.green}+ {self.highlight(old, new)}{self.s.off}")
            for new in after[b0 + (a1 - a0) : b1]:
                changed += 1
                if changed <= 8:
                    print(f"      {self.s.green}+ {shorten(new)}{self.s.off}")
        html = "\n".join(after)
        self.note(
            f"{changed} changed lines; {html.count('/c/')} tracked links, "
            f"{html.count('/o/')} open pixel; mailto:, tel:, the template link and the "
            'data-msys-clicktrack="0" link untouched'
        )

    def highlight(self, old: str, new: str) -> str:
        """``new`` with each tracked URL in bold, its token shortened."""
        del old  # the tracked URLs are the whole difference

        def bold(match: re.Match[str]) -> str:
            url = match.group(0)
            token = url.rsplit("/", 1)[1]
            short = f"{url[: len(url) - len(token)]}{token[:10]}…({len(token)} chars)"
            return f"{self.s.bold}{short}{self.s.off}{self.s.green}"

        return shorten(re.sub(r"https?://[^/\s\"']+/[coi]/[A-Za-z0-9_-]+", bold, new), 400)

    def engage(self, delivered: bytes, ports: dict[str, int], config_path: Path) -> None:
        self.step("Opening and clicking it, as a mail client on an iPhone would")
        html = "\n".join(html_lines(delivered))
        base = f"http://127.0.0.1:{ports['tracker']}"
        codec = TokenCodec.from_config(load_config(str(config_path)), create=False)
        opens = re.findall(rf"{re.escape(base)}(/o/[A-Za-z0-9_-]+)", html)
        clicks = re.findall(rf"{re.escape(base)}(/c/[A-Za-z0-9_-]+)", html)
        for path in opens[:1]:
            status, headers, body = fetch(ports["tracker"], path, IPHONE)
            self.note(
                f"GET {path[:28]}… -> {status} {headers.get('content-type')} ({len(body)} bytes)"
            )
        chosen = [p for p in clicks if codec.decode(p[3:]).link_name == "harvest-story"][:1]
        chosen += [p for p in clicks if codec.decode(p[3:]).unsubscribe][:1]
        for path in chosen:
            status, headers, _ = fetch(ports["tracker"], path, IPHONE)
            self.note(f"GET {path[:28]}… -> {status} Location: {headers.get('location')}")
        self.note(
            "a tampered link gets 404, never a redirect: "
            f"{fetch(ports['tracker'], chosen[0][:-3] + 'xyz', IPHONE)[0]}"
        )


def shorten(text: str, width: int = 160) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def html_lines(message: bytes) -> list[str]:
    for part in email.message_from_bytes(message).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode("utf-8").splitlines()
    return []


def newsletter() -> EmailMessage:
    sample = resources.files(__package__)
    message = EmailMessage()
    message["From"] = "The Orchard <news@orchard.example.com>"
    message["To"] = f"Jane Doe <{RECIPIENT}>"
    message["Subject"] = "Autumn at the Orchard"
    message["X-MSYS-API"] = HEADER
    message.set_content((sample / "newsletter.txt").read_text("utf-8"), cte="quoted-printable")
    html = (sample / "newsletter.html").read_text("utf-8")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


# The demo's listeners; each a free loopback port unless pinned (--tracker-port ...), so a
# --keep demo's dashboard can sit on a port forwarded or bookmarked beforehand.
LISTENERS = ("milter", "tracker", "admin")


def write_config(work: Path, pinned: dict[str, int]) -> tuple[Path, dict[str, int]]:
    ports = {name: pinned.get(name) or free_port() for name in LISTENERS}
    config = work / "smtpapi-milter.toml"
    config.write_text(
        f'state_dir = "{work / "state"}"\n'
        f'[smtpapi]\ntracking_domain = "127.0.0.1:{ports["tracker"]}"\n'
        f'[milter]\nsocket = "inet:{ports["milter"]}@127.0.0.1"\n'
        f'[policy]\ndirectory = "{work / "policies"}"\n'
        f'[engagement_tracker]\nlisten = "127.0.0.1:{ports["tracker"]}"\n'
        f'admin_listen = "127.0.0.1:{ports["admin"]}"\n'
    )
    (work / "policies").mkdir(mode=0o755)
    return config, ports


@contextlib.contextmanager
def supervised(config: Path, log: Path, ports: dict[str, int]) -> Iterator[None]:
    """``smtpapi-milter run`` in its own session, ready when every listener answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "smtpapi_milter.cli", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = deadline_in(60)
        wait_for_port("127.0.0.1", ports["milter"], deadline)
        wait_for_http(f"http://127.0.0.1:{ports['tracker']}/healthz", deadline, process)
        wait_for_http(f"http://127.0.0.1:{ports['admin']}/healthz", deadline, process)
        yield
    except TimeoutError:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def fetch(port: int, path: str, agent: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"User-Agent": agent})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def check_machine(pinned: dict[str, int]) -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "the demo starts a private Postfix, which needs root (run it as root or via sudo)"
    for tool in ("postfix", "postconf"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin") is None:
            return "Postfix is not installed: `make demo` installs it (apt-get install postfix)"
    for name, port in pinned.items():
        if not 0 < port < 65536:
            return f"--{name}-port {port}: not a TCP port (1-65535)"
        if not port_is_free("127.0.0.1", port):
            return f"--{name}-port {port}: 127.0.0.1:{port} is in use"
    if len(set(pinned.values())) < len(pinned):
        return f"the pinned ports must differ: {pinned}"
    return None


def pinned_ports(options: dict[str, int | None]) -> dict[str, int]:
    """The ports pinned by option, else by $SMTPAPI_DEMO_<NAME>_PORT; 0 or unset = free."""
    pinned = {}
    for name in LISTENERS:
        port = options.get(name)
        if port is None:
            variable = f"SMTPAPI_DEMO_{name.upper()}_PORT"
            text = os.environ.get(variable, "").strip() or "0"
            if not text.isdigit():
                raise ValueError(f"{variable}={text!r}: not a port number")
            port = int(text)
        if port:
            pinned[name] = port
    return pinned


def main(keep: bool = False, options: dict[str, int | None] | None = None) -> int:
    """Run the walkthrough; ``options`` maps "milter"/"tracker"/"admin" to pinned ports."""
    try:
        pinned = pinned_ports(options or {})
    except ValueError as exc:
        print(f"smtpapi-milter demo: {exc}", file=sys.stderr)
        return 1
    problem = check_machine(pinned)
    if problem:
        print(f"smtpapi-milter demo: {problem}", file=sys.stderr)
        return 1
    return Demo(keep, sys.stdout.isatty(), pinned).run()
