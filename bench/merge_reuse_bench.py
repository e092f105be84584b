"""Mail merge in the engine: CPU per copy when every body is new, with and without reuse.

A campaign's copies differ in a few short spans: each greets its reader by name and carries
the reader's own account and preferences links. The analysis cache (rewrite/analysis.py)
only helps when bodies are identical; rewrite/merge_reuse.py lets a new body's HTML scan
reuse the previous copy's outside the changed spans. In one process, through the pipeline
as the milter drives it (end of message, tokens and encoding included), three runs over the
same newsletter (the corpus template nearest 83 KB with 25 links, quoted-printable,
multipart/alternative with a text part, links given real URLs):

* identical bodies (every copy after the first is an analysis-cache hit): the floor;
* mail-merged copies, reuse off: every body analysed from scratch;
* mail-merged copies, reuse on.

CPU time (``time.process_time``) per copy, best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from smtpapi_milter.cli import run_message  # noqa: E402
from smtpapi_milter.config import parse_config  # noqa: E402
from smtpapi_milter.message_file import parse_message_file  # noqa: E402
from smtpapi_milter.pipeline import Pipeline  # noqa: E402
from smtpapi_milter.tokens import TokenCodec  # noqa: E402
from tests import corpus  # noqa: E402

KEY = ("bench", bytes(range(32)))
NAMES = ["Jane Doe", "Li Wei", "Zoë Ångström", "Oluwaseun Adeyemi", "María José", "Bob"]


def newsletter() -> str:
    """The corpus template nearest 83 KB with 25 links or more, with real URLs."""
    texts = [corpus.realistic(p.read_bytes()).decode("utf-8") for p in corpus.html_files()]
    rich = [t for t in texts if t.count('href="https://www.example.com/articles/') >= 25]
    return min(rich or texts, key=lambda t: abs(len(t.encode()) - 83_000))


def merged(html: str, reader: int) -> str:
    """``html`` as reader ``reader``'s copy: a greeting, own account and preferences links."""
    name = NAMES[reader % len(NAMES)] + f" {reader}"
    body = html.find(">", html.lower().find("<body")) + 1
    greeting = f'<p class="greeting">Hello {name},</p>'
    end = html.lower().rfind("</body>")
    footer = (
        f'<p><a href="https://www.example.com/account?reader={reader}&amp;sig={reader * 7919}">'
        f'Your account</a> | <a href="https://www.example.com/preferences/{reader:06d}">'
        "Email preferences</a></p>"
    )
    return html[:body] + greeting + html[body:end] + footer + html[end:]


def messages(html: str, copies: int, merge: bool) -> list[tuple[list, bytes, str]]:
    out = []
    for reader in range(copies):
        text = merged(html, reader) if merge else merged(html, 0)
        data = corpus.wrap_html(text.encode("utf-8"), "quoted-printable")
        message = parse_message_file(data)
        out.append((message.headers, message.body, f"reader{reader}@example.org"))
    return out


def run(pipeline: Pipeline, batch: list[tuple[list, bytes, str]]) -> tuple[float, int]:
    links = 0
    start = time.process_time()
    for headers, body, rcpt in batch:
        result = run_message(pipeline, headers, body, rcpt, "news@example.com")
        links += result.links_tracked
    return time.process_time() - start, links


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not corpus.html_files():
        print(f"no corpus at {corpus.CORPUS} (set SMTPAPI_CORPUS)", file=sys.stderr)
        return 2
    html = newsletter()
    codec = TokenCodec([KEY])
    config = parse_config({"state_dir": "/nonexistent"})
    same = messages(html, args.copies, merge=False)
    merge = messages(html, args.copies, merge=True)
    runs = {
        "identical bodies (cache hit)": (same, True),
        "mail merge, reuse off": (merge, False),
        "mail merge, reuse on": (merge, True),
    }
    best: dict[str, float] = {name: float("inf") for name in runs}
    links: dict[str, int] = {}
    for _ in range(args.rounds):  # alternate, so every run sees the same machine state
        for name, (batch, reuse) in runs.items():
            pipeline = Pipeline(config, codec=codec)
            pipeline.analyses.reuse_similar = reuse
            seconds, links[name] = run(pipeline, batch)
            best[name] = min(best[name], seconds)
    size = len(merge[0][1])
    print(
        f"{args.copies} copies of a {len(html.encode()) / 1000:.0f} KB HTML newsletter "
        f"({size / 1000:.0f} KB body, quoted-printable, multipart/alternative), "
        f"CPU best of {args.rounds} rounds"
    )
    print(f"{'':32}{'ms/copy':>9}{'x floor':>9}{'links/copy':>12}")
    floor = best["identical bodies (cache hit)"] / args.copies
    for name in runs:
        per_copy = best[name] / args.copies
        print(
            f"{name:32}{1000 * per_copy:9.3f}{per_copy / floor:9.2f}"
            f"{links[name] / args.copies:12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
