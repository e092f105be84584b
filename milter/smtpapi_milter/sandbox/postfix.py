"""A private Postfix instance per test or benchmark: its own config, queue, ports and log.

End-to-end tests (SPEC 10) drive Debian's real Postfix, so each needs an instance nobody
else touches and that leaves nothing behind. ``PrivatePostfix`` writes a self-contained
``main.cf``/``master.cf`` into a temp dir (no chroot, no DNS, loopback only, every message
relayed to one capture server, short retry delays so a tempfailed message comes back within
a test, the log in a file inside the dir), starts it with ``postfix -c DIR start``, probes
its listeners for a 220 greeting, and on exit stops it, waits for every process of the
instance to be gone and removes the dir. Instances share nothing but the binaries, so several
run at once, beside the machine's own Postfix.

Facts this relies on (checked on Debian 12, Postfix 3.7): root may use ``-c DIR`` with
``postfix``, ``postqueue`` and ``sendmail`` without listing DIR in the default main.cf's
``alternate_config_directories`` (that check is for non-root callers only), and nothing
reads ``/etc/postfix/main.cf`` then, so a "No configuration" install works and the default
instance's files are never touched. The daemons run as ``mail_owner``, so the temp dir must
be traversable and ``data_directory`` owned by it; ``maillog_file`` needs the ``postlog``
service and a ``maillog_file_prefixes`` entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .ports import LOOPBACK, deadline_in, free_port, wait_for_smtp_banner
from .processes import processes

POSTFIX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# SPEC 11's memory bar sends 10 MB messages; Postfix's default limit is 10240000.
MESSAGE_SIZE_LIMIT = 64 * 1024 * 1024
MILTER_TIMEOUTS = {"connect": "5s", "command": "15s", "content": "60s"}
MAIL_OWNER = "postfix"
CONFIG_AGE = 60.0  # seconds to backdate written config files by (see _write_config)
START_ATTEMPTS = 3  # a port chosen in advance can be taken before master binds it
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]+$")

# No chroot anywhere (column 5 = n): a chroot needs copies of /etc files in the queue dir.
MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    """Postfix is missing, or an instance failed to start or stop."""


def postfix_command(name: str = "postfix") -> str:
    """The absolute path of a Postfix command; ``PostfixError`` if Postfix is not installed."""
    path = shutil.which(name, path=POSTFIX_PATH)
    if path is None:
        raise PostfixError(
            f"{name} not found in {POSTFIX_PATH}: install Debian's postfix package "
            "(make deps does) to run the end-to-end tests"
        )
    return path


def _run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


class PrivatePostfix:
    """A Postfix instance in a temp dir, started on entry and removed on exit.

    Keyword arguments: ``smtpd_milters``/``non_smtpd_milters`` (Postfix syntax, e.g.
    ``"inet:127.0.0.1:8891"``), ``milter_default_action``, ``milter_timeouts`` (keys
    ``connect``/``command``/``content``, Postfix time values), ``relay_port`` (all mail goes
    to ``[127.0.0.1]:relay_port``; without it mail is accepted and stays queued),
    ``extra_main_cf`` (overrides any setting), ``extra_master_cf`` (appended verbatim),
    ``listeners`` (name -> port, 0 to pick one: extra smtpd listeners whose milter
    ``{daemon_name}`` macro is the name). Attributes: ``smtp_port``, ``listener_ports``,
    ``config_dir``, ``queue_dir``, ``base_dir``, ``maillog``.
    """

    def __init__(
        self,
        *,
        smtpd_milters: str | None = None,
        non_smtpd_milters: str | None = None,
        milter_default_action: str = "tempfail",
        milter_timeouts: Mapping[str, str] | None = None,
        relay_port: int | None = None,
        extra_main_cf: Mapping[str, str] | None = None,
        extra_master_cf: str = "",
        listeners: Mapping[str, int] | None = None,
        start_timeout: float = 20.0,
        keep_dir: bool = False,
    ) -> None:
        self.smtpd_milters = smtpd_milters
        self.non_smtpd_milters = non_smtpd_milters
        self.milter_default_action = milter_default_action
        self.milter_timeouts = {**MILTER_TIMEOUTS, **(milter_timeouts or {})}
        self.relay_port = relay_port
        self.extra_main_cf = dict(extra_main_cf or {})
        self.extra_master_cf = extra_master_cf
        self.requested_listeners = dict(listeners or {})
        self.start_timeout = start_timeout
        self.keep_dir = keep_dir
        self.base_dir = Path()
        self.smtp_port = 0
        self.listener_ports: dict[str, int] = {}
        self.master_pid: int | None = None

    # --- paths ------------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        """The instance's ``config_directory`` (main.cf, master.cf)."""
        return self.base_dir / "etc"

    @property
    def queue_dir(self) -> Path:
        """The instance's ``queue_directory``."""
        return self.base_dir / "queue"

    @property
    def data_dir(self) -> Path:
        """The instance's ``data_directory``."""
        return self.base_dir / "data"

    @property
    def maillog(self) -> Path:
        """The file the instance logs to (``maillog_file``)."""
        return self.base_dir / "maillog"

    @property
    def syslog_name(self) -> str:
        """The tag on this instance's log lines."""
        return "postfix-" + self.base_dir.name

    # --- configuration ----------------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf settings this instance runs with (``extra_main_cf`` applied last)."""
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "syslog_name": self.syslog_name,
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base_dir),
            "myhostname": "mta.test",
            "mydomain": "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "local_transport": "error:local delivery is off in this test instance",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "append_dot_mydomain": "no",
            # Fast retries: a tempfailed message is tried again within a test's time.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            # Throughput should measure the milter, not Postfix's inflow throttle.
            "in_flow_delay": "0",
            "message_size_limit": str(MESSAGE_SIZE_LIMIT),
            "milter_protocol": "6",
            "milter_default_action": self.milter_default_action,
            "milter_connect_timeout": self.milter_timeouts["connect"],
            "milter_command_timeout": self.milter_timeouts["command"],
            "milter_content_timeout": self.milter_timeouts["content"],
            "milter_connect_macros": "j {daemon_name} v",
            "milter_mail_macros": "i {auth_authen} {auth_type} {mail_addr} {daemon_name}",
            "milter_rcpt_macros": "i {rcpt_addr}",
            "milter_end_of_data_macros": "i",
        }
        settings.update(self._relay_settings())
        if self.smtpd_milters is not None:
            settings["smtpd_milters"] = self.smtpd_milters
        if self.non_smtpd_milters is not None:
            settings["non_smtpd_milters"] = self.non_smtpd_milters
        settings.update(self.extra_main_cf)
        return settings

    def _relay_settings(self) -> dict[str, str]:
        if self.relay_port is not None:
            return {"relayhost": f"[{LOOPBACK}]:{self.relay_port}"}
        # Nowhere to deliver: accept mail and keep it queued. Port 1 refuses connections, so
        # every attempt (flush included) defers; an error or retry transport would make smtpd
        # refuse the recipient, and no relayhost would bounce the mail for want of DNS.
        return {"relayhost": f"[{LOOPBACK}]:1"}

    def master_cf(self) -> str:
        """The master.cf this instance runs with."""
        lines = [f"{LOOPBACK}:{self.smtp_port} inet n - n - - smtpd"]
        for name, port in self.listener_ports.items():
            lines.append(f"{LOOPBACK}:{port} inet n - n - - smtpd")
            lines.append(f"  -o milter_macro_daemon_name={name}")
        return "\n".join(lines) + "\n" + MASTER_CF_SERVICES + self.extra_master_cf

    def _choose_ports(self) -> None:
        self.smtp_port = free_port()
        self.listener_ports = {
            name: port or free_port() for name, port in self.requested_listeners.items()
        }

    def _write_config(self) -> None:
        main = "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        files = {"main.cf": main, "master.cf": self.master_cf()}
        # Postfix re-reads a config file in 300 ms naps until its mtime is over a second
        # old (it may still be being written): backdating saves two seconds per start.
        settled = time.time() - CONFIG_AGE
        for name, text in files.items():
            path = self.config_dir / name
            path.write_text(text)
            os.utime(path, (settled, settled))

    def _make_dirs(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="smtpapi-postfix-"))
        # Postfix daemons run as mail_owner and must reach the queue through this dir.
        self.base_dir.chmod(0o755)
        for path in (self.config_dir, self.queue_dir, self.data_dir):
            path.mkdir(mode=0o755)
        shutil.chown(self.data_dir, user=MAIL_OWNER)
        self.data_dir.chmod(0o700)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> PrivatePostfix:
        """Create the instance, start it and wait until every listener greets with 220."""
        if os.geteuid() != 0:
            raise PostfixError("PrivatePostfix needs root (postfix start binds and setuids)")
        postfix = postfix_command()
        self._make_dirs()
        try:
            self._start_master(postfix)
            deadline = deadline_in(self.start_timeout)
            for port in [self.smtp_port, *self.listener_ports.values()]:
                wait_for_smtp_banner(LOOPBACK, port, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_master(self, postfix: str) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self._choose_ports()
            self._write_config()
            result = _run([postfix, "-c", str(self.config_dir), "start"], self.start_timeout)
            if result.returncode == 0:
                self.master_pid = self._read_master_pid()
                return
            output = result.stdout + result.stderr + self._read_log()
            if "Address already in use" not in output or attempt == START_ATTEMPTS:
                raise PostfixError(f"postfix start failed in {self.base_dir}:\n{output}")

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the instance, wait until its processes are gone, remove its directory."""
        try:
            if self.master_pid is not None:
                # "abort" sends master the same SIGTERM as "stop", but "stop" then polls in
                # one-second naps; waiting on the process group ourselves ends sooner.
                _run([postfix_command(), "-c", str(self.config_dir), "abort"], timeout)
                _wait_for_process_group_exit(self.master_pid, deadline_in(timeout))
                self.master_pid = None
        finally:
            if not self.keep_dir and self.base_dir != Path():
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostfix:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- queue and log ----------------------------------------------------------------------

    def flush(self) -> None:
        """Ask the queue manager to try every deferred message now (``postqueue -f``)."""
        result = _run([postfix_command("postqueue"), "-c", str(self.config_dir), "-f"])
        if result.returncode != 0:
            raise PostfixError(f"postqueue -f failed: {result.stderr.strip()}")

    def queue_ids(self) -> list[str]:
        """Queue ids of the messages in this instance's queue (``postqueue -j``)."""
        result = _run([postfix_command("postqueue"), "-c", str(self.config_dir), "-j"])
        if result.returncode != 0:
            raise PostfixError(f"postqueue -j failed: {result.stderr.strip()}")
        ids = [json.loads(line)["queue_id"] for line in result.stdout.splitlines() if line]
        return [queue_id for queue_id in ids if _QUEUE_ID.match(queue_id)]

    def explain(self) -> str:
        """What the instance logged and still holds (``postqueue -p``), for a test's failure
        message: a wait that times out says why, before the instance's directory is gone."""
        queue = _run([postfix_command("postqueue"), "-c", str(self.config_dir), "-p"])
        return f"Postfix log:\n{self._read_log()}\nqueue:\n{queue.stdout}{queue.stderr}"

    def submit(self, data: bytes, sender: str, recipients: list[str]) -> None:
        """Inject ``data`` through this instance's ``sendmail`` (the ``non_smtpd_milters`` path)."""
        args = [postfix_command("sendmail"), "-C", str(self.config_dir), "-i", "-f", sender]
        result = subprocess.run(
            [*args, "--", *recipients], input=data, capture_output=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise PostfixError(f"sendmail failed: {result.stderr.decode(errors='replace')}")

    def _read_log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        """The instance's log so far, one string per line."""
        return self._read_log().splitlines()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Return the first log line matching the regex ``pattern``, waiting up to ``timeout``.

        postlogd writes asynchronously, so a line can appear shortly after the event.
        """
        regex = re.compile(pattern)
        deadline = deadline_in(timeout)
        while True:
            for line in self.log_lines():
                if regex.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no log line matching {pattern!r} in {self.maillog}")
            time.sleep(0.05)


def _process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    return [p.pid for p in processes() if p.pgrp == pgid and p.state != "Z"]


def _wait_for_process_group_exit(pgid: int, deadline: float) -> None:
    """Wait until master (which leads its own process group) and its children are gone.

    A zombie counts as gone: whoever adopted the daemon reaps it, not us. Stragglers past
    the deadline are killed, as ``postfix stop`` itself would.
    """
    while _process_group_members(pgid):
        if time.monotonic() >= deadline:
            for pid in _process_group_members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)
