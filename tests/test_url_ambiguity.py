"""Links whose host a browser reads otherwise than we do (security review, issue 15 item 4).

``https://good.example\\@evil.example/path`` names good.example to a browser (WHATWG ends
the host at the backslash) and evil.example to RFC 3986; it was tracked, and the tracker's
302 (backslash percent-encoded) sent the reader to evil.example. Such links now stay as
they are, and the tracker never redirects to one (tokens minted before the fix).

The oracle is ada, the WHATWG parser Node.js uses (``tests/oracle_url.py``), not ours.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import uuid
from email import message_from_bytes

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpapi_milter.config import load_config
from smtpapi_milter.rewrite.urls import is_trackable_url, split_http_url
from smtpapi_milter.tokens import TokenCodec, TrackingData
from smtpapi_milter.tracker.app import location
from smtpapi_milter.unambiguous_url import is_unambiguous

from .harness.smtpapi import ROOT, RunningTracker
from .oracle import eligible
from .oracle_url import browser_reads_same_host, idna_host, whatwg_host

ATTACK = "https://good.example\\@evil.example/path"
TRACKING_DOMAIN = "track.example.com"

AMBIGUOUS = [
    ATTACK,
    "https://good.example\\evil.example/",
    "https://good.example\\\\@evil.example/",
    "https://a@good.example\\@evil.example/",
    "https://good.example@evil.example@other.example/",
    "https://good.exa\tmple/",
    "https://good.example\n.evil.example/",
    "https://good.example/\tpath",
    "https://good.example\x00/",
    "https://good.example\x85/",
    "https://good%2eexample/",
    "https://evil.example%40good.example/",
    "https://good.example%5C@evil.example/",
    "http://0x7f.1/",
    "http://2130706433/",
    "http://127.0.0.01/",
    "https://good\u3002example/",  # ideographic full stop: a dot to IDNA
    "https://good\uff0eexample/",  # fullwidth full stop
    "https://ev\u00adil.example/",  # soft hyphen: IDNA drops it
    "https://ev\u200dil.example/",  # zero-width joiner
    "https://\uff47ood.example/",  # fullwidth letter
    "https://good.example\uff20evil.example/",  # fullwidth '@'
    "http://[1:2]/",
    "https://good.example:99999/",
    "http\u017f://good.example/",  # long s: "https" only to Unicode case-folding
    # Bytes the part's charset does not decode (surrogate-escaped): UTF-8 U+0085 in a
    # us-ascii part, Latin-1 "é" in a UTF-8 one. Each reader guesses what they are.
    "https://good.example/?ref\udcc2\udc85pr",
    "https://good.example/caf\udce9",
    # Hosts IDNA refuses, so no browser visits them (the pipeline fuzzer's finding: a Hebrew
    # letter among Latin ones, against the bidi rule of RFC 5893).
    "https://www.example\u05dcom/articles/11?utm_source=newsletter",
    "https://x.1\u0628.com/",  # a right-to-left label must start with a letter
    "https://\u0627\u0628c.example/",  # ... and hold no left-to-right one
    "https://xn--b\u00fccher.example/",  # punycode's prefix on Unicode
    "https://a\u03a3\u4e2d.example/",  # "a\u03c2" to Python's lower(), "a\u03c3" to IDNA
]


@pytest.mark.parametrize("url", AMBIGUOUS)
def test_ambiguous_links_are_not_tracked(url):
    assert not is_trackable_url(url, TRACKING_DOMAIN)
    assert not is_unambiguous(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example/path?q=1#f",
        "https://user:pw@good.example:8443/",
        "https://good.example./",
        "http://192.0.2.10/x",
        "http://[2001:db8::1]:8080/",
        "https://bücher.example/😀",
        "https://1.2.3.4x.example/",
        "https://good.example/a@b/c%20d",
        "https://www.\u05e2\u05d1\u05e8\u05d9\u05ea.com/",
        "https://1x.\u05e2\u05d1/",  # the bidi rule holds label by label, as browsers apply it
        "https://\u0645\u062b\u0627\u0644.\u0625\u062e\u062a\u0628\u0627\u0631/",
        "https://\u0645\u0648\u0642\u0639\u0661\u0662.example/",  # Arabic-Indic digits
        "https://\u0399\u03a3\u0391.example/",
    ],
)
def test_plain_links_still_are(url):
    assert is_trackable_url(url, TRACKING_DOMAIN)
    assert browser_reads_same_host(url)


# Pieces from which the property tests build URLs: parser-confusing characters among
# ordinary host, user-info and path material.
PIECES = st.sampled_from(
    [
        "good.example",
        "evil.example",
        "a",
        "0",
        "1",
        "0x7f",
        "255",
        "256",
        "010",
        "xn--bcher-kva",
        "bücher",
        "日本",
        "א",
        "ß",
        "é",
        ".",
        "..",
        "@",
        "\\",
        "/",
        "//",
        "?",
        "#",
        ":",
        ":80",
        ":65536",
        "[",
        "]",
        "[::1]",
        "[1:2]",
        "%",
        "%2e",
        "%40",
        "%5c",
        "\t",
        "\n",
        "\r",
        " ",
        "\x00",
        "\x7f",
        "\x85",
        "\u00ad",
        "\u200d",
        "\u3002",
        "\uff0e",
        "\uff20",
        "\uff0f",
        "\uff21",
        "\u2488",
        "Ⅸ",
        "ﬀ",
        "-",
        "_",
        "~",
        "!",
        "'",
        "=",
        "&",
        "^",
        "|",
        '"',
        "{",
        "`",
    ]
)
URLS = st.builds(
    lambda scheme, pieces: scheme + "".join(pieces),
    st.sampled_from(["http://", "https://", "HTTPS://", "http:\\\\", "http:/\\", "https:///"]),
    st.lists(PIECES, min_size=1, max_size=8),
)


@settings(max_examples=1500, deadline=None)
@given(URLS)
@example(ATTACK)
@example("https://good.example\\\\@evil.example/")
def test_a_tracked_url_names_the_same_host_for_browsers_and_rfc3986(url):
    if not is_trackable_url(url, TRACKING_DOMAIN):
        return
    # A host IDNA refuses (an "xn--" label holding Unicode, a label against the bidi rule)
    # leads nowhere: such links are left as they are too (they were tracked until the
    # pipeline fuzzer found one).
    assert browser_reads_same_host(url), (url, whatwg_host(url))
    # The host we compare with the tracking domain is the one the browser uses.
    host = split_http_url(url)[1]
    if not host.startswith("["):  # IPv6: compared as addresses above
        assert idna_host(host) == whatwg_host(url)


# Host characters of the scripts real domains use, by their bidi class: Latin, Greek and
# Cyrillic letters (upper and lower case), Hebrew and Arabic letters, European, Arabic-Indic
# and extended Arabic-Indic digits, a CJK ideograph, a hyphen.
HOST_CHARACTERS = st.sampled_from(
    list("az09-\u00e9\u00dc\u03a3\u03c3\u0436\u0416\u05d0\u05ea\u0628\u0645\u0661\u06f1\u4e2d")
)
LABELS = st.text(HOST_CHARACTERS, min_size=1, max_size=5)
HOSTS = st.lists(LABELS, min_size=1, max_size=3).map(".".join)


@settings(max_examples=3000, deadline=None)
@given(HOSTS)
@example("www.example\u05dcom")
@example("a\u03a3\u4e2da")
def test_hosts_of_everyday_scripts_are_tracked_exactly_when_a_browser_reads_them_alike(host):
    # Both ways: a host we track and a browser refuses (a label against the bidi rule) made
    # a link lead nowhere; one a browser reads alike and we leave would lose its clicks.
    url = f"https://{host}/x"
    assert is_unambiguous(url) == eligible(url), (url, whatwg_host(url))


@settings(max_examples=1500, deadline=None)
@given(URLS)
@example(ATTACK)
def test_the_redirect_of_an_accepted_target_lands_on_the_links_host(url):
    # What the tracker sends (Location, percent-encoded) is read by the same browser.
    if is_unambiguous(url):
        assert whatwg_host(location(url).decode()) == whatwg_host(url), url
        assert whatwg_host(url) is not None, url


def rewrite_config(tmp_path):
    config = tmp_path / "smtpapi-milter.toml"
    (tmp_path / "policies").mkdir()
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{tmp_path / "policies"}"\n'
        f'[smtpapi]\nclick_tracking_enabled = true\ntracking_domain = "{TRACKING_DOMAIN}"\n'
    )
    return config


def rewrite_parts(tmp_path, text: bytes, html: bytes, charset: str) -> tuple[bytes, bytes]:
    """The text and HTML parts of a two-part message after ``smtpapi-milter rewrite``."""
    ctype = f"; charset={charset}\n\n".encode()
    message = (
        b"From: a@example.com\nTo: b@example.org\nSubject: s\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="b"\n\n'
        + (b"--b\nContent-Type: text/plain" + ctype + text)
        + (b"--b\nContent-Type: text/html" + ctype + html + b"--b--\n")
    )
    result = subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "rewrite"]
        + ["--config", str(rewrite_config(tmp_path)), "-"],
        input=message,
        capture_output=True,
        env={"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _, plain, rich = (p.get_payload(decode=True) for p in message_from_bytes(result.stdout).walk())
    return plain, rich


def test_rewrite_leaves_the_attack_link_as_it_is(tmp_path):
    text = f"Read {ATTACK} or https://good.example/ok today.\n"
    html = (
        f'<html><body><a href="{ATTACK}">good.example</a> '
        '<a href="https://good.example&#92;@evil.example/entity">entity</a> '
        '<a href="https://good.example/ok">ok</a></body></html>\n'
    )
    plain, rich = rewrite_parts(tmp_path, text.encode(), html.encode(), "utf-8")
    plain, rich = plain.decode(), rich.decode()
    assert f"Read {ATTACK} or http://{TRACKING_DOMAIN}/c/" in plain
    assert f'<a href="{ATTACK}">' in rich
    assert '<a href="https://good.example&#92;@evil.example/entity">' in rich
    assert rich.count(f"http://{TRACKING_DOMAIN}/c/") == 1  # the plain link still is


def test_rewrite_leaves_links_with_undecodable_bytes_as_they_are(tmp_path):
    # Fuzz finding (CI, seed 1): UTF-8 "\xc2\x85" in a us-ascii part's link was tracked, and
    # the redirect went to "?ref%ED%B3%82%ED%B2%85pr": the surrogates' own UTF-8, a URL no
    # reader would have followed (one reads U+0085 there, another "\u00c2\u2026").
    odd = "https://good.example/index.php?ref\xc2\x85pr".encode("latin-1")
    text = b"Read " + odd + b" or https://good.example/ok today.\n"
    html = b'<html><body><a href="' + odd + b'">odd</a> <a href="https://good.example/ok">ok</a>\n'
    plain, rich = rewrite_parts(tmp_path, text, html, "us-ascii")
    assert b"Read " + odd + b" or http://" + TRACKING_DOMAIN.encode() + b"/c/" in plain
    assert b'<a href="' + odd + b'">odd</a>' in rich
    assert rich.count(f"http://{TRACKING_DOMAIN}/c/".encode()) == 1  # the plain link still is


def test_tracker_refuses_to_redirect_to_an_ambiguous_target(tmp_path):
    # A token minted for the attack link, as a milter before the fix did.
    rcpt = f"reader-{uuid.uuid4().hex[:8]}@example.org"
    with RunningTracker(tmp_path) as tracker:
        codec = TokenCodec.from_config(load_config(str(tracker.config_path)), create=False)
        now = int(time.time()) - 3600

        def click(target: str, method: str = "GET") -> tuple[int, dict[str, str]]:
            token = codec.encode(TrackingData("click", "1", "m", rcpt, now, target_url=target))
            conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=30)
            try:
                conn.request(method, "/c/" + token)
                response = conn.getresponse()
                response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}
            finally:
                conn.close()

        undecodable = "https://good.example/?ref\udcc2\udc85pr"
        backslashes = "https://good.example\\\\@evil.example/"
        for target in (ATTACK, backslashes, "http://0x7f.1/", undecodable):
            for method in ("GET", "HEAD"):
                status, headers = click(target, method)
                assert status == 404 and "location" not in headers, (target, method, headers)
        status, headers = click("https://good.example/path")
        assert (status, headers["location"]) == (302, "https://good.example/path")
        tracker.wait_indexed()  # the store has it a moment after the answer
        conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=30)
        conn.request("GET", f"/api/v1/events?rcpt={rcpt}", headers=tracker.admin_headers)
        events = json.loads(conn.getresponse().read())["results"]
        conn.close()
        assert [e["target_link_url"] for e in events] == ["https://good.example/path"]
