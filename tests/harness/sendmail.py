"""A real Sendmail 8.17 for end-to-end tests, beside Postfix (SPEC 10).

Debian's sendmail packages conflict with postfix, but Sendmail runs fine unpacked
(``shared/recipes/sendmail-in-tests.md``): ``apt-get download`` needs no root, ``dpkg -x``
unpacks into a cache keyed by the package version, and the tree is reused by every later run.
Its shared libraries (libwrap0, liblockfile1) and m4 conflict with nothing and are in the
Makefile's APT_PACKAGES; ``make sendmail`` (part of ``make test``) fills the cache by running
this module.

Sendmail sleeps a minute when it cannot qualify its host name and waits on DNS, so it runs in
a private UTS and network namespace (``unshare -u -n``, root) whose host name is ``mta.test``
and whose loopback nobody else sees. The test process cannot enter that namespace, so a driver
(``tests/harness/sendmail_driver.py``) runs inside it: it starts our milter, a capture server
and Sendmail, sends the messages with smtplib and writes what happened to a JSON file that
:func:`run_in_namespace` reads back for the test to judge.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sendmail-bin", "sendmail-cf")
BINARY = Path("usr/libexec/sendmail/sendmail")
CF_DIR = Path("usr/share/sendmail/cf")
HOSTNAME = "mta.test"
DAEMON_NAME = "smtpapi-in"  # Sendmail's {daemon_name}: what per-listener settings key on
# The shipped snippet, used as it is but for the socket: the tests prove what operators install.
PACKAGED_MC = ROOT / "packaging" / "sendmail" / "smtpapi-milter.mc"
PACKAGED_SOCKET = "S=inet:8890@127.0.0.1,"
RUN_TIMEOUT = 180  # seconds for one whole namespace run (start, send, deliver, stop)


class SendmailError(RuntimeError):
    """Sendmail could not be fetched, configured or run."""


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)


def candidate_version() -> str:
    """The sendmail-bin version apt would fetch (what the cache is keyed by)."""
    result = _run(["apt-cache", "policy", PACKAGES[0]], timeout=60)
    found = re.search(r"Candidate:\s*(\S+)", result.stdout)
    if result.returncode != 0 or not found or found.group(1) == "(none)":
        raise SendmailError(
            f"apt knows no {PACKAGES[0]} candidate (run apt-get update): {result.stderr.strip()}"
        )
    return found.group(1)


def cache_root() -> Path:
    """Where unpacked trees live: inside the virtualenv, else the temp dir."""
    if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "share" / "smtpapi-test"
    return Path(tempfile.gettempdir()) / "smtpapi-test"


def ensure_unpacked(version: str | None = None) -> Path:
    """The unpacked Sendmail tree for ``version`` (default: apt's candidate), fetched once."""
    version = version or candidate_version()
    tree = cache_root() / f"sendmail-{version}"
    if (tree / BINARY).exists() and (tree / CF_DIR / "m4" / "cf.m4").exists():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tree.parent, prefix=".fetch-") as tmp:
        wanted = [f"{name}={version}" for name in PACKAGES]
        fetched = _run(["apt-get", "download", *wanted], cwd=tmp, timeout=300)
        debs = sorted(Path(tmp).glob("*.deb"))
        if fetched.returncode != 0 or len(debs) != len(PACKAGES):
            raise SendmailError(f"apt-get download {' '.join(wanted)}: {fetched.stderr.strip()}")
        staging = Path(tmp) / "tree"
        for deb in debs:
            unpacked = _run(["dpkg-deb", "-x", str(deb), str(staging)], timeout=120)
            if unpacked.returncode != 0:
                raise SendmailError(f"dpkg-deb -x {deb.name}: {unpacked.stderr.strip()}")
        # Renaming a complete tree into place: a run cut short leaves no half tree behind.
        try:
            staging.rename(tree)
        except OSError:
            if not (tree / BINARY).exists():  # not a concurrent run that got there first
                raise
    return tree


def mc_text(workdir: Path, smtp_port: int, milter_socket: str, relay_port: int) -> str:
    """The test instance's .mc: loopback only, no DNS, everything relayed to the capture port.

    ``milter_socket`` is in Sendmail's form (``inet:PORT@127.0.0.1``); the milter line is the
    one ``packaging/sendmail/smtpapi-milter.mc`` ships, with the test's socket.
    """
    snippet = PACKAGED_MC.read_text()
    if snippet.count(PACKAGED_SOCKET) != 1:
        raise SendmailError(f"{PACKAGED_MC} no longer names {PACKAGED_SOCKET!r} once")
    snippet = snippet.replace(PACKAGED_SOCKET, f"S={milter_socket},")
    return (
        "divert(0)dnl\n"
        "OSTYPE(`linux')dnl\n"
        f"define(`confDOMAIN_NAME', `{HOSTNAME}')dnl\n"
        "define(`confDONT_PROBE_INTERFACES', `True')dnl\n"
        f"define(`confSERVICE_SWITCH_FILE', `{workdir}/service.switch')dnl\n"
        f"define(`confHOSTS_FILE', `{workdir}/hosts')dnl\n"
        f"define(`QUEUE_DIR', `{workdir}/mqueue')dnl\n"
        f"define(`MSP_QUEUE_DIR', `{workdir}/msp-queue')dnl\n"
        f"define(`confPID_FILE', `{workdir}/sendmail.pid')dnl\n"
        f"define(`confALIAS_FILE', `{workdir}/aliases')dnl\n"
        f"define(`confSTATUS_FILE', `{workdir}/statistics')dnl\n"
        "define(`SMART_HOST', `[127.0.0.1]')dnl\n"
        f"define(`RELAY_MAILER_ARGS', `TCP $h {relay_port}')dnl\n"
        f"define(`ESMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl\n"
        "FEATURE(`nocanonify')dnl\n"
        "FEATURE(`accept_unresolvable_domains')dnl\n"
        "FEATURE(`no_default_msa')dnl\n"
        f"DAEMON_OPTIONS(`Port={smtp_port}, Addr=127.0.0.1, Name={DAEMON_NAME}')dnl\n"
        + snippet
        + "MAILER(`smtp')dnl\n"
    )


def write_cf(tree: Path, workdir: Path, smtp_port: int, milter_socket: str, relay: int) -> Path:
    """Generate ``workdir/sendmail.cf`` (and the files it names) with the unpacked m4 files."""
    (workdir / "service.switch").write_text("hosts files\n")
    (workdir / "hosts").write_text(f"127.0.0.1 localhost {HOSTNAME}\n")
    (workdir / "aliases").write_text("postmaster: root\n")
    for queue in ("mqueue", "msp-queue"):
        # Sendmail refuses a queue directory others may write to.
        (workdir / queue).mkdir(mode=0o700, exist_ok=True)
    mc = workdir / "sendmail.mc"
    mc.write_text(mc_text(workdir, smtp_port, milter_socket, relay))
    cf_dir = tree / CF_DIR
    if shutil.which("m4") is None:
        raise SendmailError("m4 not found: it is in the Makefile's APT_PACKAGES")
    result = _run(["m4", f"-D_CF_DIR_={cf_dir}/", str(cf_dir / "m4" / "cf.m4"), str(mc)])
    if result.returncode != 0 or not result.stdout:
        raise SendmailError(f"m4 {mc}: {result.stderr.strip()}")
    cf = workdir / "sendmail.cf"
    cf.write_text(result.stdout)
    return cf


@dataclass(frozen=True)
class Outgoing:
    """One SMTP transaction the driver sends to Sendmail."""

    data: bytes
    rcpts: tuple[str, ...] = ("jane.doe@example.org",)
    mail_from: str = "news@example.com"


@dataclass
class Outcome:
    """What the client saw for one transaction and what reached the capture server."""

    accepted: bool
    code: int = 250
    text: str = ""
    refused: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class NamespaceRun:
    """Everything a namespace run left behind for the test to judge."""

    outcomes: list[Outcome]
    delivered: list[dict[str, Any]]  # mail_from, rcpt_tos, data (bytes)
    milter_config: Path
    milter_log: str


def run_in_namespace(
    workdir: Path, messages: list[Outgoing], milter: dict[str, dict[str, Any]] | None = None
) -> NamespaceRun:
    """Run the driver in a private namespace; send ``messages``; return what happened.

    ``milter`` holds config sections for RunningMilter (``{"smtpapi": {...}}``).
    """
    if os.geteuid() != 0:
        raise SendmailError("the Sendmail end-to-end tests need root (unshare -u -n)")
    tree = ensure_unpacked()
    spec = {
        "tree": str(tree),
        "workdir": str(workdir),
        "milter": milter or {},
        "messages": [
            {"data": base64.b64encode(m.data).decode(), "rcpts": m.rcpts, "from": m.mail_from}
            for m in messages
        ],
    }
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps(spec))
    # -p -f --kill-child: the driver is the namespace's init, so whatever it leaves running
    # (Sendmail forks its daemon away) dies with it.
    command = [
        "unshare",
        "-u",
        "-n",
        "-p",
        "-f",
        "--kill-child",
        sys.executable,
        "-m",
        "tests.harness.sendmail_driver",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "milter")])}
    done = _run(
        [*command, str(spec_path), str(result_path)], cwd=ROOT, env=env, timeout=RUN_TIMEOUT
    )
    log_path = workdir / "milter" / "milter.log"
    milter_log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if done.returncode != 0 or not result_path.exists():
        raise SendmailError(
            f"driver failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\nmilter log:\n"
            + milter_log
        )
    result = json.loads(result_path.read_text())
    delivered = [{**d, "data": base64.b64decode(d["data"])} for d in result["delivered"]]
    return NamespaceRun(
        outcomes=[Outcome(**o) for o in result["outcomes"]],
        delivered=delivered,
        milter_config=workdir / "milter" / "smtpapi-milter.toml",
        milter_log=milter_log,
    )


if __name__ == "__main__":
    # `make sendmail`: fetch and unpack once, so the tests find the tree in the cache.
    print(ensure_unpacked())
