"""`make demo` (for now): track a sample newsletter with the real CLI and show what changed.

It builds a newsletter from the corpus (multipart/alternative, quoted-printable, an
X-MSYS-API header turning tracking on), runs `smtpapi-milter rewrite` on it exactly as a user
would, and prints the differences in the decoded HTML, one tracked link taken apart, and the
reply a malformed header gets.
"""

from __future__ import annotations

import difflib
import email
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from smtpapi_milter.config import load_config  # noqa: E402
from smtpapi_milter.tokens import TokenCodec  # noqa: E402
from tests import corpus  # noqa: E402

CLI = [sys.executable, "-m", "smtpapi_milter.cli"]
SAMPLE = "html/colorlib/10__index.html"
HEADER = (
    b'X-MSYS-API: {"campaign_id": "autumn-newsletter", "tags": ["newsletter", "demo"],\r\n'
    b'  "metadata": {"user_id": "12345"},\r\n'
    b'  "options": {"open_tracking": true, "click_tracking": true}}'
)
BOLD, GREEN, RED, DIM, OFF = (
    ("\033[1m", "\033[32m", "\033[31m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def step(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}")


def html_of(message: bytes) -> list[str]:
    msg = email.message_from_bytes(message)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode("utf-8").splitlines()
    return []


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(CLI + args, env=env, capture_output=True, check=False)


def main() -> int:
    sample = corpus.CORPUS / SAMPLE
    if not sample.exists():
        print(f"corpus not found at {corpus.CORPUS} (set SMTPAPI_CORPUS)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="smtpapi-demo-") as tmp:
        work = Path(tmp)
        config = work / "smtpapi-milter.toml"
        config.write_text(f'state_dir = "{work / "state"}"\n[policy]\ndirectory = "{work}"\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
        message = corpus.wrap_html(
            corpus.realistic(sample.read_bytes()), "quoted-printable", HEADER
        )
        (work / "newsletter.eml").write_bytes(message)

        step(f"1. A newsletter from the corpus ({SAMPLE}), {len(message)} bytes, QP-encoded")
        print(HEADER.decode())
        step("2. smtpapi-milter rewrite --rcpt jane.doe@example.org newsletter.eml")
        result = run(
            [
                "rewrite",
                "--config",
                str(config),
                "--rcpt",
                "jane.doe@example.org",
                "--out-dir",
                str(work / "out"),
                str(work / "newsletter.eml"),
            ],
            env,
        )
        if result.returncode != 0:
            print(result.stderr.decode(), file=sys.stderr)
            return 1
        tracked = (work / "out" / "newsletter.eml").read_bytes()
        show_changes(message, tracked)
        show_token(tracked, load_config(str(config)))
        step("5. A malformed header is refused as Momentum refuses it")
        bad = message.replace(b'"metadata": {"user_id": "12345"}', b'"metadata": ["12345"]')
        (work / "bad.eml").write_bytes(bad)
        result = run(["rewrite", "--config", str(config), str(work / "bad.eml")], env)
        print(f"exit status {result.returncode}; stderr: {result.stderr.decode().strip()}")
    return 0


def show_changes(before: bytes, after: bytes) -> None:
    step("3. What changed in the decoded HTML (everything else is byte-identical)")
    print(f"X-MSYS-API header present after: {b'X-MSYS-API' in after}")
    diff = list(difflib.unified_diff(html_of(before), html_of(after), lineterm="", n=0))
    shown = 0
    for line in diff[2:]:
        if line.startswith("@@") or shown >= 12:
            continue
        colour = RED if line.startswith("-") else GREEN
        print(f"{colour}{line[:160]}{'…' if len(line) > 160 else ''}{OFF}")
        shown += 1
    changed = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
    links = "\n".join(html_of(after)).count("localhost:8080/c/")
    print(f"{DIM}({changed} changed lines in all; {links} tracked links in the HTML){OFF}")


def show_token(tracked: bytes, config) -> None:
    step("4. One tracked link taken apart (only the tracker's key can do this)")
    html = "\n".join(html_of(tracked))
    m = re.search(r"http://localhost:8080/c/([A-Za-z0-9_-]+)", html)
    if not m:
        print("no tracked link found")
        return
    print(f"URL: {m.group(0)[:100]}… ({len(m.group(1))}-character token)")
    print(f"recipient visible in URL: {'jane.doe' in m.group(0)}")
    data = TokenCodec.from_config(config, create=False).decode(m.group(1))
    for name in ("target_url", "rcpt_to", "campaign_id", "tags", "metadata", "transmission_id"):
        print(f"  {name:16} {getattr(data, name)!r}")


if __name__ == "__main__":
    sys.exit(main())
