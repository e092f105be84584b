"""A tour of the policy API: copy this file into the policy directory and edit it.

smtpapi-milter loads every ``*.py`` file in ``[policy] directory`` in file-name order and
calls the Momentum phase hooks a file defines, each with one context object ``ctx``:

  validate_connect(ctx)               client connected   ctx.client_address, ctx.client_name
  validate_ehlo(ctx)                  HELO/EHLO          ctx.helo
  validate_mailfrom(ctx)              MAIL FROM          ctx.mail_from, ctx.macro("{auth_authen}")
  validate_rcptto(ctx)                each RCPT TO       ctx.recipient
  validate_data_spool(ctx)            the message is in  ctx.header(name), ctx.xmsysapi
  validate_data_spool_each_rcpt(ctx)  once per recipient ctx.recipient (last chance)

``ctx.set(name, value)`` sets a context variable. Values are strings, always (a number or a
bool raises TypeError: that is a bug in the policy, caught at once). A variable set in
``validate_data_spool_each_rcpt`` applies to that recipient only; earlier phases apply to the
whole connection (connect, ehlo) or message (mailfrom, rcptto, data_spool).
``ctx.get(name)`` reads one back. The variables smtpapi-milter acts on:

  smtpapi_open_tracking, smtpapi_click_tracking   "1" "0" "true" "false"
  smtpapi_open_tracking_scheme, smtpapi_click_tracking_scheme   "http" "https"
  smtpapi_tracking_domain        "click.example.com"
  smtpapi_tracking_link_expiry   seconds, "0" = never
  smtpapi_campaign_id            at most 64 bytes
  smtpapi_tags                   '["a", "b"]' (JSON array; the first 10 count)
  smtpapi_metadata               '{"k": "v"}' (JSON object, at most 200 bytes)
  smtpapi_list_unsubscribe       "1" "0" "true" "false": RFC 8058 List-Unsubscribe headers
  smtpapi_transactional          "1" "0" "true" "false": no List-Unsubscribe, no
                                 non-transactional suppression (as options.transactional)
  smtpapi_bounce_domain          "bounces.example.com": return path for out-of-band
                                 bounces and complaints; "" = the sender's own
  mo_customer_id                 set from SMTP AUTH; a policy may set it too

A policy variable beats the X-MSYS-API header, which beats the configuration.
``ctx.reject(text)`` answers 550 5.7.1 (or your code/status); ``ctx.tempfail(text)`` 451 4.7.1.
An exception in a hook tempfails the message with 451 4.3.0 and logs the traceback: mail is
never lost because of a policy bug.

This example is deliberately inert unless the message asks for it, so it is safe to load.
"""

INTERNAL_DOMAINS = ("example.net",)


def validate_mailfrom(ctx):
    # Mail from an authenticated user carries that user as the customer id already; mail
    # without SMTP AUTH can be attributed by sender domain instead.
    if not ctx.get("mo_customer_id") and ctx.mail_from.endswith("@newsletters.example.com"):
        ctx.set("mo_customer_id", "newsletters")


def validate_data_spool(ctx):
    # A sender that cannot set X-MSYS-API can still name its campaign in a header of its own.
    campaign = ctx.header("X-Campaign")
    if campaign and not ctx.get("smtpapi_campaign_id"):
        ctx.set("smtpapi_campaign_id", campaign.strip()[:64])


def validate_data_spool_each_rcpt(ctx):
    # Colleagues get the same mail, but we do not track them opening it.
    if ctx.recipient and ctx.recipient.lower().endswith(INTERNAL_DOMAINS):
        ctx.set("smtpapi_open_tracking", "0")
        ctx.set("smtpapi_click_tracking", "0")
