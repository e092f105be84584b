"""Per-listener tracking domains: each brand's mail gets links on that brand's domain.

Postfix tells the milter which listener took the message (``milter_macro_daemon_name``,
macro ``{daemon_name}``); Momentum sites did the same with per-listener policy. The simpler
alternative, with no code, is a ``[smtpapi.listener.NAME]`` table in the configuration.
"""

BRANDS = {
    "brand-a": "click.brand-a.example",
    "brand-b": "click.brand-b.example",
}


def validate_connect(ctx):
    domain = BRANDS.get(ctx.listener)
    if domain:
        ctx.set("smtpapi_tracking_domain", domain)
        ctx.set("smtpapi_click_tracking_scheme", "https")
        ctx.set("smtpapi_open_tracking_scheme", "https")
