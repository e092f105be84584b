"""Settings that are valid but defeat their own purpose: said by ``check`` and logged at
start, never refused (an operator may mean them, for a test bench without TLS).

One today: RFC 8058 (section 3.1) wants the one-click List-Unsubscribe target to be an
HTTPS URI, and Gmail's and Yahoo's bulk-sender rules read it so: with the click scheme
``http`` the header goes out and mailbox providers ignore it, so the sender believes it
complies and does not.
"""

from __future__ import annotations

from .config import Config


def advice(config: Config) -> list[str]:
    """One line per setting worth a second look, naming the file and key."""
    lines = []
    named = [("smtpapi", config.smtpapi)]
    named += [
        (f"smtpapi.listener.{name}", config.smtpapi.for_listener(name))
        for name in config.smtpapi.listener
    ]
    for section, settings in named:
        if settings.list_unsubscribe and settings.click_tracking_scheme == "http":
            lines.append(
                f"{config.source}: '{section}': list_unsubscribe is on with "
                'click_tracking_scheme = "http": RFC 8058 one-click needs an https URL and '
                "Gmail and Yahoo ignore the header without one; serve the tracker behind TLS "
                'and set click_tracking_scheme = "https"'
            )
    return lines
