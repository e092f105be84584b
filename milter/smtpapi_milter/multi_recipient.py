"""How a transaction with several recipients is handled (``[smtpapi] multi_recipient``, SPEC 5).

A tracked link names its recipient, so one body cannot serve two recipients. The modes:

- ``auto`` (default): ``split`` when the operator configured the re-injection listener
  (``reinject_to``), otherwise one body for all (``shared``). Never drops a recipient and
  never depends on the client retrying: ``smtplib.sendmail``, swaks and most application
  mailers report a 452 recipient as refused and never send to it.
- ``defer``: later RCPTs get ``452 4.5.3``; only clients that retry them (Postfix, Sendmail
  as relays) deliver to everyone.
- ``split``: one personalised copy per extra recipient, re-injected to ``reinject_to``.
- ``shared``: one body for everyone; its links and injection events name no recipient.

A transaction with one recipient is tracked for that recipient in every mode but an explicit
``shared``. Non-SMTP mail (no client to retry) is never deferred.
"""

from __future__ import annotations

AUTO, DEFER, SPLIT, SHARED = "auto", "defer", "split", "shared"


def defers_extra_recipients(mode: str, non_smtp: bool) -> bool:
    """Whether a second RCPT gets 452 4.5.3."""
    return mode == DEFER and not non_smtp


def shares_body(mode: str, reinject_to: str, non_smtp: bool, recipients: int) -> bool:
    """Whether all recipients get one body whose links name no recipient.

    Otherwise each recipient gets a copy of its own: the first stays in the transaction,
    the others are re-injected to ``reinject_to``.
    """
    if mode == AUTO:
        return not reinject_to and recipients > 1
    if mode == DEFER:  # only reached by non-SMTP mail: nobody could be asked to retry
        return non_smtp and recipients > 1
    return mode == SHARED
