"""Where the services listen: the milter's libmilter socket and the HTTP ``host:port`` strings.

Parsed strictly, once, when the configuration is loaded, so that ``check``, a start and a
reload all refuse the same mistakes. The mistake that made this module: Postfix writes an inet
milter as ``inet:127.0.0.1:8890`` and libmilter as ``inet:8890@127.0.0.1``; libmilter reads
the Postfix form as port ``atoi("127.0.0.1:8890")`` = 127 on every interface. So both forms
are accepted and the Postfix one is rewritten to libmilter's, and nothing listens on a
wildcard address unless the operator wrote one (``0.0.0.0``, ``::``): a socket without a host
is refused rather than guessed, because "this machine only" and "every interface" are both
plausible readings and only the operator knows which was meant.

Functions raise ValueError with a message that completes "'<key>' <value>: ..." and shows
the right form; config.py adds the file and the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# RFC 1123 host names: what libmilter's gethostbyname can look up.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?i)^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
MILTER_FORMS = (
    "inet:PORT@HOST (e.g. inet:8890@127.0.0.1), inet6:PORT@HOST (e.g. inet6:8890@::1) "
    "or unix:/ABSOLUTE/PATH"
)


@dataclass(frozen=True)
class MilterSocket:
    """A parsed ``[milter] socket``: ``kind`` is inet, inet6 or unix."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        """libmilter's notation (what ``Milter.runmilter`` is given)."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"{self.kind}:{self.port}@{self.host}"


def milter_socket(text: str) -> MilterSocket:
    """Parse a libmilter socket, or Postfix's ``inet:HOST:PORT`` / ``inet:[IPV6]:PORT``."""
    kind, colon, rest = text.partition(":")
    kind = kind.lower()
    if not colon or kind not in ("inet", "inet6", "unix", "local"):
        raise ValueError(f"is not a milter socket: use {MILTER_FORMS}")
    if kind in ("unix", "local"):
        if not rest.startswith("/") or "\0" in rest or rest.endswith("/"):
            raise ValueError(
                "must name an absolute socket file path, e.g. unix:/run/smtpapi-milter/milter.sock"
            )
        return MilterSocket("unix", path=rest)
    if "@" in rest:  # libmilter's PORT@HOST
        port_text, _, host = rest.partition("@")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    elif rest.isdigit():
        port_text, host = rest, ""
    else:  # Postfix's HOST:PORT, [IPV6]:PORT for IPv6
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"is not a milter socket: use {MILTER_FORMS}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("is ambiguous: write inet6:PORT@ADDRESS (e.g. inet6:8890@::1)")
    port = _port(port_text)
    if not host:
        wildcard = "::" if kind == "inet6" else "0.0.0.0"
        raise ValueError(
            f"names no address, and libmilter would listen on every interface: write "
            f"{kind}:{port}@{'::1' if kind == 'inet6' else '127.0.0.1'} for this machine only, "
            f"or {kind}:{port}@{wildcard} if every interface is meant"
        )
    family = _host_family(host)
    if family == 6 and kind == "inet":
        kind = "inet6"  # Postfix's inet:[::1]:8890; libmilter's inet takes IPv4 only
    elif family == 4 and kind == "inet6":
        raise ValueError(f"names an IPv4 address: write inet:{port}@{host}")
    return MilterSocket(kind, host=host, port=port)


def listen_address(text: str) -> tuple[str, int]:
    """Parse an HTTP listener's ``IP:PORT`` (``[IPV6]:PORT``); (host without brackets, port).

    An IP literal, not a name: Granian binds addresses only, and a name that resolves
    differently tomorrow should not move a listener.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be IP:PORT, e.g. 127.0.0.1:8080 (or [::1]:8080)")
    bracketed = host.startswith("[") and host.endswith("]")
    address = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            "must be IP:PORT with an IP address, e.g. 127.0.0.1:8080 (or [::1]:8080)"
        ) from None
    if ip.version == 6 and not bracketed:
        raise ValueError(f"must write an IPv6 address in brackets: [{address}]:PORT")
    return address, _port(port_text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"has port {text!r}: a port is a number from 1 to 65535")
    return int(text)


def _host_family(host: str) -> int:
    """4 or 6 for an IP literal, 0 for a host name; ValueError for anything else."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise ValueError(f"has host {host!r}: name a host or an IP address")
    return 0
