"""What a message that came back to a return path says: which recipients failed and why, or
who complained (SPEC 13).

In order, because the standard forms are exact and the rest is guesswork:

1. RFC 5965 ARF (``multipart/report; report-type=feedback-report``): a complaint, with the
   feedback type, the reporter's User-Agent and the addresses it names.
2. RFC 3464 DSN (``multipart/report; report-type=delivery-status``): one finding per
   recipient whose ``Action`` is ``failed`` or ``delayed``, with its ``Status`` and the
   receiving server's ``Diagnostic-Code``.
3. Anything else that GNU Mailman's ``flufl.bounce`` recognises as a bounce (qmail, Exim,
   Exchange, Yahoo and a dozen other home-made formats): its permanent and temporary
   failures; the reason is the text around the address in the message.
4. Auto-replies (RFC 3834 ``Auto-Submitted``, vacation programs' own headers and subjects):
   not bounces. They come out as class 60 (Auto-Reply) and never suppress anyone.

DSNs are auto-submitted too (Postfix marks its own ``auto-replied``), so a report is tried as
a report before it is taken for a vacation message; a vacation message that flufl.bounce
happens to match (a heuristic quoting "user unknown") stays an auto-reply when it says it is
one. Bounce classes come from the delivery follower's rules (delivery/bounce_class.py).
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.parser
import email.utils
import logging
import re
from dataclasses import dataclass, field

from flufl.bounce import all_failures

from ..delivery.bounce_class import BounceClassifier

DSN, ARF, BOUNCE, AUTO_REPLY, UNKNOWN = "dsn", "arf", "bounce", "auto_reply", "unknown"
AUTO_REPLY_CLASS = 60
GENERIC_HARD_UNSURE = 40  # a permanent failure no rule explains: SparkPost's Generic Bounce
GENERIC_TEMPORARY = 70  # Transient Failure
REASON_CHARS = 1000
CLASSIFY_LIMIT = 1024 * 1024

# flufl.bounce logs each detector's doubts at INFO: not ours to show.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Failure:
    """One recipient's failure (or delay) as a report tells it."""

    recipient: str  # the failed address as the report names it ('' if it names none)
    action: str  # failed, delayed (DSN), or failed for the other kinds
    status: str  # enhanced status code, e.g. 5.1.1 ('' if none)
    error_code: str  # the reply code, e.g. 550 ('' if none)
    raw_reason: str  # the receiving server's words (Diagnostic-Code, or the bounce's text)
    bounce_class: int
    remote_mta: str = ""


@dataclass
class Report:
    kind: str  # DSN, ARF, BOUNCE, AUTO_REPLY or UNKNOWN
    failures: list[Failure] = field(default_factory=list)
    # ARF only
    feedback_type: str = ""
    user_agent: str = ""
    report_by: str = ""  # the reporter's domain (the report's From)
    report_to: str = ""  # where the report was sent (the report's To)
    complained_about: str = ""  # Original-Rcpt-To, or the enclosed message's To
    reporting_mta: str = ""  # DSN only: the host that wrote it (Reporting-MTA), lower case
    # Text of the report and of the message it encloses, for finding the return-path token.
    texts: list[str] = field(default_factory=list)


def classify(raw: bytes, classifier: BounceClassifier) -> Report:
    """What ``raw`` reports. Only its first CLASSIFY_LIMIT bytes are read: a report's own
    parts come first and are small, and of the message it returns only the headers matter
    (flufl.bounce's heuristics take about 0.5 s of CPU per 4 MB; a 20 MB bounce would cost
    10 s for nothing)."""
    head = raw[:CLASSIFY_LIMIT]
    try:
        return _classify(email.message_from_bytes(head), head, classifier)
    except RecursionError:
        # Parts nested thousands deep (the email package recurses once per level): read the
        # header fields alone rather than fail the report, which the MTA would retry for days.
        headers = email.parser.BytesParser().parsebytes(head, headersonly=True)
        return _classify(headers, head, classifier)


def _classify(message: email.message.Message, head: bytes, classifier: BounceClassifier) -> Report:
    # The token is in the raw text unless a part's transfer encoding hides it (a returned
    # message sent back base64-encoded): those parts are added decoded.
    texts = [head.decode("latin-1"), *_decoded_parts(message, encoded_only=True)]
    if message.get_content_type() == "multipart/report":
        report_type = (message.get_param("report-type") or "").lower()
        if report_type == "feedback-report":
            return _arf(message, texts)
        if report_type == "delivery-status":
            failures, recipients = _dsn_failures(message, classifier)
            if recipients:  # else a report with no recipient block: read it as a bounce
                return Report(DSN, failures, texts=texts, reporting_mta=_reporting_mta(message))
    autoreply = is_auto_reply(message)
    found = _flufl(message, classifier) or _from_mailer_daemon(message, classifier)
    if found and not autoreply:
        return Report(BOUNCE, found, texts=texts)
    if autoreply:
        text = _subject(message)
        failure = Failure("", "auto_reply", "", "", text, AUTO_REPLY_CLASS)
        return Report(AUTO_REPLY, [failure], texts=texts)
    return Report(UNKNOWN, texts=texts)


# --- ARF ---------------------------------------------------------------------------------


def _arf(message: email.message.Message, texts: list[str]) -> Report:
    fields = _report_fields(message, "message/feedback-report")
    first = fields[0] if fields else {}
    report = Report(ARF, texts=texts)
    report.feedback_type = first.get("feedback-type", "").strip().lower() or "abuse"
    report.user_agent = first.get("user-agent", "").strip()
    report.report_by = _domain(_field(message, "From"))
    report.report_to = _domain(_field(message, "To"))
    rcpt = first.get("original-rcpt-to", "").strip()
    if not rcpt:
        enclosed = _enclosed_headers(message)
        rcpt = email.utils.parseaddr(_field(enclosed, "To"))[1] if enclosed else ""
    rcpt = _address(rcpt)
    report.complained_about = rcpt if "@" in rcpt else ""  # "Undisclosed", "redacted"
    return report


# --- DSN ---------------------------------------------------------------------------------


def _dsn_failures(
    message: email.message.Message, classifier: BounceClassifier
) -> tuple[list[Failure], int]:
    """The failed and delayed recipients, and how many recipient blocks the report has (a
    success notice has some, none of them failed)."""
    failures = []
    # The per-message block has neither field; a whitespace-only line (seen in the wild)
    # can glue the first recipient's block to it, so it is not simply skipped.
    blocks = _report_fields(message, "message/delivery-status")
    blocks = [b for b in blocks if "action" in b or "final-recipient" in b]
    for block in blocks:
        action = block.get("action", "").strip().lower()
        action = {"failure": "failed", "delay": "delayed"}.get(action, action)  # seen in the wild
        if not action:  # required by RFC 3464, yet missing: the Status class tells
            action = {"5": "failed", "4": "delayed"}.get(_status(block.get("status", ""))[:1], "")
        if action not in ("failed", "delayed"):
            continue
        # Original-Recipient is the address the copy was sent to (the ORCPT our MTA gave);
        # Final-Recipient may be where a forwarding site sent it on, never one of ours.
        original = _address(block.get("original-recipient"))
        final = _address(block.get("final-recipient"))
        recipient = original if "@" in original else final or original
        status = _status(block.get("status", ""))
        diagnostic = " ".join(block.get("diagnostic-code", "").split())
        kind, _, text = diagnostic.partition(";")
        reason = text.strip() if text and kind.strip().lower() in ("smtp", "x-postfix") else ""
        reason = reason or diagnostic
        if not reason and not status:  # "Status: 553 Exceeded maximum ..." (not RFC 3464)
            reason = " ".join(block.get("status", "").split())
        code_match = re.match(r"([245]\d\d)\b", reason)
        code = code_match[1] if code_match else ""
        bounce_class = classifier.classify(status or None, int(code) if code else None, reason)
        failures.append(
            Failure(
                recipient,
                action,
                status,
                code,
                reason[:REASON_CHARS],
                bounce_class,
                remote_mta=block.get("remote-mta", "").partition(";")[2].strip(),
            )
        )
    return failures, len(blocks)


def _reporting_mta(message: email.message.Message) -> str:
    for block in _report_fields(message, "message/delivery-status"):
        kind, _, host = block.get("reporting-mta", "").partition(";")
        if host.strip():
            return host.strip().lower()
    return ""


def _report_fields(message: email.message.Message, content_type: str) -> list[dict[str, str]]:
    """The header blocks of a report part (message/delivery-status: per-message block, then
    one per recipient), keys lower-cased, values unfolded."""
    blocks: list[dict[str, str]] = []
    for part in message.walk():
        if part.get_content_type() != content_type:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):  # the parser made each block a Message
            for block in payload:
                blocks.append({k.lower(): _unfold(v) for k, v in block.items()})
            continue
        text = part.get_payload(decode=True) or b""
        for chunk in re.split(rb"\r?\n[ \t]*\r?\n", text):
            if chunk.strip():
                parsed = email.parser.BytesHeaderParser().parsebytes(chunk.lstrip() + b"\n\n")
                blocks.append({k.lower(): _unfold(v) for k, v in parsed.items()})
    return blocks


def _status(text: str) -> str:
    match = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", text)
    return f"{match[1]}.{int(match[2])}.{int(match[3])}" if match else ""


# --- non-standard bounces ----------------------------------------------------------------


def _flufl(message: email.message.Message, classifier: BounceClassifier) -> list[Failure]:
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector tripping over odd MIME is no reason to lose the report
        return []
    body = "\n".join(_decoded_parts(message))
    failures = []
    for address, permanent_failure in sorted(
        [(a, True) for a in permanent] + [(a, False) for a in temporary - permanent]
    ):
        recipient = address.decode("utf-8", "replace").strip("<>")
        reason = _reason_near(body, recipient)
        status = _status(reason)
        code_match = re.search(r"\b([45]\d\d)[ -]", reason)
        code = code_match[1] if code_match else ""
        bounce_class = classifier.classify(status or None, int(code) if code else None, reason)
        if bounce_class == 1:  # flufl.bounce knows it failed, the text not why
            bounce_class = GENERIC_HARD_UNSURE if permanent_failure else GENERIC_TEMPORARY
        action = "failed" if permanent_failure else "delayed"
        failures.append(Failure(recipient, action, status, code, reason, bounce_class))
    return failures


def _reason_near(body: str, address: str) -> str:
    """The receiving server's reply about ``address``: the first line with a reply or status
    code within a few lines of where the address is named (and the lines continuing it);
    failing that, the lines around the address (bounces put the reason there)."""
    lines = body.splitlines()
    lowered = address.lower()
    hits = [n for n, line in enumerate(lines) if lowered and lowered in line.lower()]
    for number in hits:
        for at in range(number, min(number + 8, len(lines))):
            if _REPLY.search(lines[at]):
                return _joined(lines[at : at + 3])
    if hits:
        window = [x.strip() for x in lines[hits[0] : hits[0] + 5]]
        text = " ".join(x for x in window if x and not x.startswith("--"))
        return " ".join(text.split())[:REASON_CHARS]
    return _joined(lines)


def _joined(lines: list[str]) -> str:
    kept = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("--"):
            break  # a blank line or a separator ends the reason
        kept.append(line.strip())
    return " ".join(" ".join(kept).split())[:REASON_CHARS]


# A reply code ("550 User unknown", "550-5.1.1"; not a phone number's "423-5635"), an
# enhanced status code, or qmail's "(#5.1.1)".
_REPLY = re.compile(
    r"\b[45]\d\d[ -](?=[A-Za-z<#(]|[45]\.\d)|\b[45]\.\d{1,3}\.\d{1,3}\b|\(#[45]\.\d"
)
_DAEMON_SUBJECT = re.compile(
    r"undeliver|delivery (?:status|failure|has failed)|failure notice|returned mail|"
    r"mail delivery failed|could not be delivered|non.?delivery",
    re.IGNORECASE,
)


def _from_mailer_daemon(
    message: email.message.Message, classifier: BounceClassifier
) -> list[Failure]:
    """A bounce no detector knows, from a mailer daemon: the first reply or status code in
    its own text (not the returned message) says why; the recipient is whatever the reply
    line names (the return path names it anyway when the copy had one recipient)."""
    daemon = _looks_like_mailer_daemon(message) or bool(_DAEMON_SUBJECT.search(_subject(message)))
    if not daemon:
        return []
    texts = _decoded_parts(message)
    text = texts[0] if texts else ""
    for line_number, line in enumerate(text.splitlines()):
        if _REPLY.search(line):
            reason = _joined(text.splitlines()[line_number : line_number + 3])
            break
    else:
        return []
    failed = _field(message, "X-Failed-Recipients").split(",")[0].strip()
    named = re.search(r"<([^<>\s@]+@[^<>\s]+)>", reason)
    recipient = failed or (named[1] if named else "")
    status = _status(reason)
    code_match = re.search(r"\b([45]\d\d)[ -]", reason)
    code = code_match[1] if code_match else ""
    bounce_class = classifier.classify(status or None, int(code) if code else None, reason)
    temporary = (status or code).startswith("4")
    if bounce_class == 1:
        bounce_class = GENERIC_TEMPORARY if temporary else GENERIC_HARD_UNSURE
    action = "delayed" if temporary else "failed"
    return [Failure(recipient, action, status, code, reason, bounce_class)]


# --- auto-replies ------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of (?:the )?office|"
    r"vacation|abwesenheit|r[ée]ponse automatique|respuesta autom[áa]tica|absence)",
    re.IGNORECASE,
)


def is_auto_reply(message: email.message.Message) -> bool:
    """RFC 3834's Auto-Submitted: auto-replied, or the marks vacation programs and Exchange
    leave (X-Autoreply, X-Autorespond, Precedence: auto_reply, an out-of-office subject)."""
    submitted = _field(message, "Auto-Submitted").strip().lower()
    if submitted.startswith("auto-replied"):
        return not _looks_like_mailer_daemon(message)
    if _field(message, "X-Autoreply") or _field(message, "X-Autorespond"):
        return True
    if _field(message, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.search(_subject(message)):
        return True
    if _field(message, "Precedence").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(_subject(message)))


def _looks_like_mailer_daemon(message: email.message.Message) -> bool:
    sender = email.utils.parseaddr(_field(message, "From"))[1].lower()
    return sender.split("@")[0] in ("mailer-daemon", "postmaster") or bool(
        _field(message, "X-Failed-Recipients")
    )


# --- helpers -----------------------------------------------------------------------------


def _field(message: email.message.Message, name: str) -> str:
    """A header field's value as a string ("" if absent). 8-bit bytes in a field make the
    email package return a Header object, which string methods would trip over."""
    value = message.get(name)
    return "" if value is None else str(value)


def _subject(message: email.message.Message) -> str:
    value = message.get("Subject") or ""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeError, LookupError, email.errors.HeaderParseError):
        return str(value)


def _decoded_parts(message: email.message.Message, encoded_only: bool = False) -> list[str]:
    """Every text part (and enclosed message header) as text, transfer encoding undone;
    with ``encoded_only``, only base64 and quoted-printable ones."""
    texts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() not in ("text", "message"):
            continue
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoded_only and encoding not in ("base64", "quoted-printable"):
            continue
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            charset = part.get_content_charset() or "latin-1"
            try:
                texts.append(data.decode(charset, "replace"))
            except LookupError:
                texts.append(data.decode("latin-1"))
        elif isinstance(part.get_payload(), list):
            texts.extend(str(m) for m in part.get_payload())
    return texts


def _enclosed_headers(message: email.message.Message) -> email.message.Message | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and isinstance(part.get_payload(), list):
            return part.get_payload()[0]
        if kind == "text/rfc822-headers":
            data = part.get_payload(decode=True) or b""
            return email.parser.BytesHeaderParser().parsebytes(data)
    return None


def _unfold(value: object) -> str:
    return " ".join(str(value).split())


def _address(value: str | None) -> str:
    """The address in a DSN/ARF address field (``rfc822; a@b``) or a header value."""
    text = (value or "").strip()
    kind, sep, rest = text.partition(";")
    if sep and "@" not in kind:
        text = rest.strip()
    return (email.utils.parseaddr(text)[1] or text).strip("<> ")


def _domain(value: str) -> str:
    address = email.utils.parseaddr(value)[1]
    return address.rpartition("@")[2].lower()
