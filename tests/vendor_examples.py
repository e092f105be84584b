"""One message per vendor header family, with header values taken from each vendor's public
documentation (cited beside each), for the rewrite CLI and Postfix tests."""

from __future__ import annotations

import re

from . import corpus

HTML = (
    b"<html><body><p>Welcome aboard</p>"
    b'<a href="https://example.com/start?step=1&amp;ref=mail">Get started</a>'
    b'<a href="https://example.com/help">Help</a></body></html>\r\n'
)

# SendGrid: "category" from https://www.twilio.com/docs/sendgrid/for-developers/sending-email/
# building-an-x-smtpapi-header (the SMTP API's example {"category": ["newuser"]}); "unique_args"
# from https://www.twilio.com/docs/sendgrid/for-developers/sending-email/unique-arguments (its
# first two arguments); the clicktrack and opentrack filters as written in
# https://www.twilio.com/docs/sendgrid/for-developers/sending-email/smtp-filters. Folded, as
# that page asks for headers over 1,000 characters.
SENDGRID = (
    b'X-SMTPAPI: {"category": ["newuser"],\r\n'
    b' "unique_args": {"customerAccountNumber": "55555", "activationAttempt": "1"},\r\n'
    b' "filters": {"clicktrack": {"settings": {"enable": 1, "enable_text": true}},\r\n'
    b'  "opentrack": {"settings": {"enable": 1}}}}'
)
SENDGRID_EXPECT = (("newuser",), {"customerAccountNumber": "55555", "activationAttempt": "1"})

# Mailgun: X-Mailgun-Tag (repeatable) and the yes/no tracking headers from
# https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/
# pass-sending-options; both X-Mailgun-Variables examples (combined) from "Attaching Data to
# Messages", https://github.com/mailgun/documentation/blob/master/source/user_manual.rst.
MAILGUN = (
    b"X-Mailgun-Tag: newsletter\r\n"
    b"X-Mailgun-Tag: september\r\n"
    b'X-Mailgun-Variables: {"first_name": "John", "last_name": "Smith"}\r\n'
    b'X-Mailgun-Variables: {"my_message_id": 123}\r\n'
    b"X-Mailgun-Track: yes\r\n"
    b"X-Mailgun-Track-Clicks: yes\r\n"
    b"X-Mailgun-Track-Opens: yes"
)
MAILGUN_EXPECT = (
    ("newsletter", "september"),
    {"first_name": "John", "last_name": "Smith", "my_message_id": 123},
)

# Postmark: the metadata headers of https://postmarkapp.com/support/article/
# 1125-custom-metadata-faq-1 (color: blue, client-id: 12345); X-PM-TrackOpens: true from
# https://postmarkapp.com/developer/user-guide/tracking-opens/tracking-opens-per-email;
# X-PM-TrackLinks values from https://postmarkapp.com/support/article/
# 1058-how-do-i-enable-link-tracking; X-PM-Tag from
# https://postmarkapp.com/developer/user-guide/send-email-with-smtp.
POSTMARK = (
    b"X-PM-Tag: welcome-email\r\n"
    b"X-PM-Metadata-color: blue\r\n"
    b"X-PM-Metadata-client-id: 12345\r\n"
    b"X-PM-TrackOpens: true\r\n"
    b"X-PM-TrackLinks: HtmlAndText"
)
POSTMARK_EXPECT = (("welcome-email",), {"color": "blue", "client-id": "12345"})

FAMILIES = {
    "x-smtpapi": (SENDGRID, SENDGRID_EXPECT),
    "mailgun": (MAILGUN, MAILGUN_EXPECT),
    "postmark": (POSTMARK, POSTMARK_EXPECT),
}
VENDOR_FIELD = re.compile(
    rb"^(?:X-SMTPAPI|X-Mailgun-[\w-]+|X-PM-[\w-]+):.*?\r\n(?![ \t])", re.M | re.S | re.I
)


def message(family: str, cte: str = "quoted-printable") -> bytes:
    """A multipart/alternative message (text and HTML, both with links) with the family's
    example headers."""
    return corpus.wrap_html(HTML, cte, FAMILIES[family][0])


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def without_vendor_fields(data: bytes) -> bytes:
    """The message with every vendor field cut out and every other byte as it was."""
    head, sep, body = data.partition(b"\r\n\r\n")
    return VENDOR_FIELD.sub(b"", head + b"\r\n")[:-2] + sep + body
