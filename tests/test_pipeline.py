"""The pipeline end to end on single messages: SPEC 12's hard cases, each a test."""

from __future__ import annotations

import base64
import binascii
import re
from email import message_from_bytes

import pytest

from smtpapi_milter.cli import rewrite_bytes
from smtpapi_milter.config import parse_config
from smtpapi_milter.pipeline import Pipeline
from smtpapi_milter.policy import PolicySet
from smtpapi_milter.replies import SmtpReplyError
from smtpapi_milter.tokens import TokenCodec

from .oracle import TRACKED, judge

CODEC = TokenCodec([("test", bytes(range(32)))])
TRACK = b'X-MSYS-API: {"options": {"open_tracking": true, "click_tracking": true}}\r\n'
HEAD = b"From: News <news@example.com>\r\nTo: jane@example.org\r\nSubject: Hi\r\n"


def pipeline(policies: PolicySet | None = None, **smtpapi) -> Pipeline:
    config = parse_config({"state_dir": "/nonexistent", "smtpapi": smtpapi})
    return Pipeline(config, policies, codec=CODEC)


def single(html: str, cte: str = "8bit", header: bytes = TRACK, charset="utf-8") -> bytes:
    body = html.encode(charset)
    if cte == "quoted-printable":
        body = binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")
    elif cte == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return (
        HEAD + header + b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body
    )


def rewrite(message: bytes, p: Pipeline | None = None, rcpt="jane@example.org") -> bytes:
    return rewrite_bytes(p or pipeline(), message, rcpt=rcpt)


def html_out(message: bytes) -> str:
    for part in message_from_bytes(message).walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "ascii")
    raise AssertionError("no html part")


def targets(text: str) -> list[str]:
    return [CODEC.decode(m.group(1)).target_url for m in TRACKED.finditer(text)]


def test_qp_soft_break_inside_href():
    url = "https://www.example.com/" + "segment/" * 12 + "?utm_source=news&amp;id=42"
    message = single(
        f'<html><body><p>{"x" * 60}<a href="{url}">go</a></p></body></html>', "quoted-printable"
    )
    assert b'href=3D"https://www.example.com/segment/segment/' in message
    assert b"=\r\n" in message.split(b"href=3D")[1].split(b">go")[0]  # split by a soft break
    out = rewrite(message)
    assert targets(html_out(out)) == [url.replace("&amp;", "&")]
    judge(message, out, CODEC)
    assert b"Content-Transfer-Encoding: quoted-printable" in out


def test_entities_decoded_for_the_target():
    out = html_out(rewrite(single('<a href="http://x.example/?a=1&amp;b=2&#38;c=3">x</a>')))
    assert targets(out) == ["http://x.example/?a=1&b=2&c=3"]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/user@host/!bang,comma'quote",
        "https://example.com/path/(parens)/[brackets]?q=a,b",
        "https://example.com/caf\u00e9/\U0001f600?emoji=\U0001f389",
        "https://example.com/%E2%9C%93?x=%20y",
    ],
)
def test_unusual_url_characters_survive(url):
    message = single(f'<p><a href="{url}">link</a></p>')
    out = rewrite(message)
    assert targets(html_out(out)) == [url]
    judge(message, out, CODEC)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/{{user_id}}",
        "https://example.com/?e=%%EMAIL%%",
        "https://example.com/?e=*|EMAIL|*",
        "https://example.com/{% url 'x' %}",
    ],
)
def test_template_syntax_left_alone(url):
    message = single(f'<a href="{url}">x</a>')
    assert html_out(rewrite(message)).startswith(f'<a href="{url}">x</a>')


def test_outlook_vml_button_and_fallback_both_tracked():
    html = (
        "<html><body><!--[if mso]>\r\n"
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://example.com/buy"'
        ' style="height:40px"><center>Buy</center></v:roundrect>\r\n<![endif]-->\r\n'
        '<!--[if !mso]><!--><a href="https://example.com/buy">Buy</a><!--<![endif]-->\r\n'
        "</body></html>"
    )
    message = single(html)
    out = rewrite(message)
    assert targets(html_out(out)) == ["https://example.com/buy", "https://example.com/buy"]
    assert "<!--[if mso]>" in html_out(out)
    judge(message, out, CODEC)


def test_area_tracked_base_relative_not():
    html = (
        '<html><head><base href="https://example.com/"></head><body>'
        '<map name="m"><area shape="rect" coords="0,0,1,1" href="https://example.com/a"></map>'
        '<a href="relative/page">rel</a><a href="/abs-path">abs</a></body></html>'
    )
    out = html_out(rewrite(single(html)))
    assert targets(out) == ["https://example.com/a"]
    assert 'href="relative/page"' in out and 'href="/abs-path"' in out
    assert '<base href="https://example.com/">' in out


def test_links_in_style_script_comments_are_not_links():
    html = (
        '<html><head><style>a[href="https://s.example/"]{color:red}</style>'
        "<script>var s = '<a href=\"https://j.example/\">';</script></head><body>"
        '<!-- <a href="https://c.example/">old</a> --><a href="https://real.example/">r</a>'
        "</body></html>"
    )
    out = html_out(rewrite(single(html)))
    assert targets(out) == ["https://real.example/"]
    for kept in ("https://s.example/", "https://j.example/", "https://c.example/"):
        assert kept in out


def test_no_body_pixel_stays_inside_the_part():
    message = (
        HEAD + TRACK + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>fragment</p>\r\n--b--\r\n"
    )
    out = rewrite(message)
    part = out.split(b"Content-Type: text/html\r\n\r\n")[1]
    # The CRLF before "--b--" belongs to the delimiter, so the pixel goes before it.
    assert re.match(rb"<p>fragment</p><img [^>]+/o/[^>]+/>\r\n--b--\r\n$", part)


def test_pixel_goes_before_body_end_with_alt():
    out = html_out(rewrite(single("<html><body><p>x</p></body></html>")))
    assert re.search(r'<p>x</p><img [^>]*alt=""[^>]*/o/[A-Za-z0-9_-]+"[^>]*/></body></html>$', out)


def test_initial_open_pixel_after_body_start():
    out = html_out(
        rewrite(
            single('<html><body class="x"><p>x</p></body></html>'),
            pipeline(initial_open_pixel_tracking=True),
        )
    )
    assert re.match(r'<html><body class="x"><div style="[^"]*display:none[^"]*"><img [^>]*/i/', out)


def test_initial_open_pixel_without_body_stays_after_doctype_and_head():
    # Text ahead of the doctype would put browsers in quirks mode (a regression once).
    html = "<!DOCTYPE html><html><head><title>t</title></head><p>x</p></html>"
    out = html_out(rewrite(single(html), pipeline(initial_open_pixel_tracking=True)))
    assert re.match(
        r'<!DOCTYPE html><html><head><title>t</title></head><div style="[^"]*display:none', out
    )


def test_amp_part_untouched():
    amp = b'<!doctype html><html \xe2\x9a\xa14email><body><a href="https://amp.example/">a</a></body></html>'
    message = (
        HEAD + TRACK + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee https://example.com/x\r\n"
        b"--b\r\nContent-Type: text/x-amp-html; charset=utf-8\r\n\r\n" + amp + b"\r\n"
        b'--b\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/h">h</a>\r\n'
        b"--b--\r\n"
    )
    out = rewrite(message)
    assert amp in out
    judge(message, out, CODEC)


def test_base64_utf8_html_is_tracked():
    message = single('<p>Grüße <a href="https://example.com/ü">ü</a></p></body>', "base64")
    out = rewrite(message)
    assert b"Content-Transfer-Encoding: base64" in out
    assert targets(html_out(out)) == ["https://example.com/ü"]
    judge(message, out, CODEC)


def test_charset_kept_latin1():
    message = single('<p>caf\u00e9 <a href="https://example.com/">x</a></p>', charset="iso-8859-1")
    out = rewrite(message)
    assert "café" in html_out(out)
    assert b"charset=iso-8859-1" in out
    assert b"caf\xe9" in out


def test_long_8bit_line_moves_to_qp_and_header_follows():
    links = "".join(f'<a href="https://example.com/{i}">{i}</a>' for i in range(12))
    message = single(f"<html><body>{links}</body></html>\r\n")
    assert max(map(len, message.split(b"\r\n"))) < 998
    out = rewrite(message)
    assert max(map(len, out.split(b"\r\n"))) <= 998
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out
    assert b"Content-Transfer-Encoding: 8bit" not in out
    judge(message, out, CODEC)


def test_double_curlies_unescaped_in_tracked_body():
    out = html_out(
        rewrite(single("<p>{{opening_double_curly()}}name{{closing_double_curly()}} {{other}}</p>"))
    )
    assert out.startswith("<p>{{name}} {{other}}</p>")


def test_link_name_unsubscribe_and_opt_out():
    html = (
        '<a data-msys-linkname="hero button" href="https://example.com/a">a</a>'
        '<a data-msys-unsubscribe="1" href="https://example.com/unsub">u</a>'
        '<a data-msys-clicktrack="0" href="https://example.com/private">p</a>'
        f'<a data-msys-linkname="{"n" * 80}" href="https://example.com/long">l</a>'
    )
    out = html_out(rewrite(single(html)))
    tokens = [CODEC.decode(m.group(1)) for m in TRACKED.finditer(out)]
    assert [(t.target_url, t.link_name, t.unsubscribe) for t in tokens] == [
        ("https://example.com/a", "hero button", False),
        ("https://example.com/unsub", "", True),
        ("https://example.com/long", "n" * 63, False),
    ]
    assert 'href="https://example.com/private"' in out


def test_links_on_tracking_domain_and_long_urls_left_alone():
    long_url = "https://example.com/" + "a" * 4100
    html = f'<a href="http://localhost:8080/c/abc">t</a><a href="{long_url}">l</a>'
    assert html_out(rewrite(single(html))).startswith(html)


def test_skip_url_text_links_option():
    html = '<a href="https://a.example/">https://a.example/</a><a href="https://b.example/">B</a>'
    out = html_out(rewrite(single(html), pipeline(skip_url_text_links=True)))
    assert targets(out) == ["https://b.example/"]


def test_text_part_urls_tracked_trailing_punctuation_kept():
    message = (
        HEAD + TRACK + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Read https://example.com/post?id=1&x=2. Or (https://example.com/wiki/A_(b)).\r\n"
        b"mailto:x@example.com stays\r\n"
    )
    out = rewrite(message)
    body = out.split(b"\r\n\r\n", 1)[1].decode()
    assert [CODEC.decode(t).target_url for t in TRACKED.findall(body)] == [
        "https://example.com/post?id=1&x=2",
        "https://example.com/wiki/A_(b)",
    ]
    assert re.search(r"/c/[A-Za-z0-9_-]+\. Or \(http://localhost:8080/c/[A-Za-z0-9_-]+\)\.", body)


@pytest.mark.parametrize(
    "header_line",
    [b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; b=abc\r\n"],
)
def test_dkim_signed_untouched_but_header_removed(header_line):
    message = single('<a href="https://example.com/">x</a>', header=TRACK + header_line)
    out = rewrite(message)
    assert out == message.replace(TRACK, b"")


def test_signed_message_untouched():
    message = (
        HEAD + TRACK + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=s\r\n\r\n'
        b'--s\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/">x</a>\r\n'
        b"--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n"
    )
    assert rewrite(message) == message.replace(TRACK, b"")


def test_no_header_default_config_is_byte_identical():
    message = single('<a href="https://example.com/">x</a>', header=b"")
    assert rewrite(message) == message


def test_lf_only_files_keep_lf():
    message = single('<p><a href="https://example.com/">x</a></p>\r\n').replace(b"\r\n", b"\n")
    out = rewrite(message)
    assert b"\r" not in out
    assert targets(html_out(out)) == ["https://example.com/"]


def test_duplicate_header_rejected():
    with pytest.raises(SmtpReplyError) as info:
        rewrite(single("<p>x</p>", header=TRACK + TRACK))
    assert str(info.value.reply) == "550 5.6.0 message has more than one X-MSYS-API header"


def test_token_carries_injection_details():
    header = (
        b'X-MSYS-API: {"campaign_id": "bf", "tags": ["a"], "metadata": {"u": "1"},'
        b' "options": {"click_tracking": true}}\r\n'
    )
    out = html_out(rewrite(single('<a href="https://example.com/">x</a>', header=header)))
    data = CODEC.decode(TRACKED.search(out).group(1))
    assert (data.rcpt_to, data.campaign_id, data.tags, data.metadata) == (
        "jane@example.org",
        "bf",
        ("a",),
        {"u": "1"},
    )
    assert data.expires - data.injection_time == 31536000
    assert "/o/" not in out  # open tracking stayed off


def test_metadata_left_out_of_clicks_when_configured():
    config = parse_config(
        {"state_dir": "/x", "engagement_tracker": {"click_tracking_include_metadata": False}}
    )
    header = b'X-MSYS-API: {"metadata": {"u": "1"}, "options": {"click_tracking": true}}\r\n'
    out = html_out(
        rewrite(
            single('<a href="https://e.example/">x</a>', header=header),
            Pipeline(config, codec=CODEC),
        )
    )
    assert CODEC.decode(TRACKED.search(out).group(1)).metadata is None


def write_policy(tmp_path, text: str) -> PolicySet:
    path = tmp_path / "p.py"
    path.write_text(text)
    path.chmod(0o644)
    return PolicySet.load(tmp_path)


def test_per_recipient_policy_beats_header(tmp_path):
    policies = write_policy(
        tmp_path,
        "def validate_data_spool_each_rcpt(ctx):\n"
        "    if ctx.recipient == 'quiet@example.org':\n"
        "        ctx.set('smtpapi_open_tracking', '0')\n",
    )
    message = single("<html><body><p>x</p></body></html>")
    p = pipeline(policies)
    assert "/o/" in html_out(rewrite(message, p, rcpt="loud@example.org"))
    quiet = rewrite(message, p, rcpt="quiet@example.org")
    assert "/o/" not in html_out(quiet)


def test_campaign_from_policy(tmp_path):
    policies = write_policy(
        tmp_path, "def validate_data_spool(ctx):\n    ctx.set('smtpapi_campaign_id', 'pol')\n"
    )
    header = b'X-MSYS-API: {"campaign_id": "hdr", "options": {"click_tracking": true}}\r\n'
    out = html_out(
        rewrite(single('<a href="https://e.example/">x</a>', header=header), pipeline(policies))
    )
    assert CODEC.decode(TRACKED.search(out).group(1)).campaign_id == "pol"


def test_raising_policy_tempfails(tmp_path):
    policies = write_policy(tmp_path, "def validate_data_spool(ctx):\n    1 / 0\n")
    with pytest.raises(SmtpReplyError) as info:
        rewrite(single("<p>x</p>"), pipeline(policies))
    assert (info.value.reply.code, info.value.reply.status) == ("451", "4.3.0")


def test_listener_overrides_apply():
    config = parse_config(
        {
            "state_dir": "/x",
            "smtpapi": {
                "listener": {
                    "brand": {"click_tracking_enabled": True, "tracking_domain": "t.brand.example"}
                }
            },
        }
    )
    p = Pipeline(config, codec=CODEC)
    message = single('<a href="https://e.example/">x</a>', header=b"")
    assert rewrite_bytes(p, message, rcpt="a@b.example") == message
    out = rewrite_bytes(p, message, rcpt="a@b.example", listener="brand").decode()
    assert 'href="http://t.brand.example/c/' in out
