"""What a parser reads from the MTA's log: one recipient's delivery attempt, or a message
given up on as a whole (Postfix's qmgr ``status=expired, returned to sender``)."""

from __future__ import annotations

from typing import NamedTuple

DELIVERED, DEFERRED, BOUNCED = "delivery", "delay", "bounce"


# Named tuples, not frozen dataclasses: the follower makes one per log line it keeps, and a
# frozen dataclass's __init__ sets each field through object.__setattr__ (several times the cost).
class Outcome(NamedTuple):
    """One recipient's attempt: ``kind`` is the event type it becomes.

    ``recipient`` is the address the MTA delivered to, ``original`` the one it was given
    (Postfix ``orig_to=``, when an alias or canonical map rewrote it) or "". ``reply`` is
    the remote server's reply or the MTA's own reason, ``code`` its SMTP code ("" when there
    is none: a connection that failed), ``enhanced`` the DSN status (``5.1.1``).
    ``key`` tells attempts apart in event ids (the line's own text serves).
    """

    kind: str
    time: float
    queue_id: str
    recipient: str
    original: str
    reply: str
    code: str
    enhanced: str
    queue_seconds: float | None
    relay_host: str
    relay_ip: str
    delv_method: str
    tls: bool | None
    key: str

    @property
    def routing_domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()


class MessageExpired(NamedTuple):
    """Every recipient of ``queue_id`` still undelivered is bounced (the queue's lifetime
    ended); the recipients come from the injections and the reason from the last delay."""

    time: float
    queue_id: str
    sender: str
