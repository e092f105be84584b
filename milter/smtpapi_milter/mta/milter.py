"""The pymilter adapter: SMTP stages in, pipeline calls, milter actions and replies out.

Kept thin on purpose: every decision is the pipeline's. This module only knows libmilter's
rules (STYLE.md "pymilter facts that bite"): replies via setreply + REJECT/TEMPFAIL, body
replacement only at end of message and in chunks, header deletion by 1-based index, and an
exception escaping a callback would become an anonymous 451 — so every callback is trapped
(``trap``) and the pipeline's own failures are decided in ``_guard``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import Milter
import structlog

from ..events.store import StoreUnavailable
from ..logs import HotLogger
from ..pipeline import Decision, MessageResult, Pipeline
from ..policy import PolicyFailure
from ..rejections import is_policy_refusal, rejection_events
from ..replies import EXTRA_RECIPIENT_DEFERRED, SmtpReply, SmtpReplyError, milter_text
from ..vendor_headers import field_deletions
from . import memory
from .body_spool import BodySpool
from .reinject import ReinjectError, Reinjector
from .state import STORE_DOWN, MilterState
from .trap import INTERNAL, Answer, answer_failure, trapped

log = structlog.get_logger("smtpapi_milter.milter")
# The line every message gets (_log_result): bound once per logging configuration.
message_log = HotLogger("smtpapi_milter.milter")

REPLACE_CHUNK = 64 * 1024
# Exactly the actions we use: a milter that asks for less saves the MTA work.
ACTIONS = Milter.CHGBODY | Milter.CHGHDRS | Milter.ADDHDRS | Milter.DELRCPT | Milter.CHGFROM
STOPPING = SmtpReply("451", "4.3.2", "smtpapi-milter is restarting, try again later")


def _address(value: str) -> str:
    value = value.strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def _is_non_smtp(hostaddr: Any) -> bool:
    """Whether the MTA simulates the connection for mail that did not come over SMTP.

    Postfix's cleanup, feeding non_smtpd_milters with mail from the sendmail command, sends
    "localhost", 127.0.0.1 and port 0 (observed with Postfix 3.7; ``{client_port}`` is "0"
    too); no TCP client has port 0. Sendmail gives local submissions an unknown address
    family, which pymilter passes as None.
    """
    if hostaddr is None:
        return True
    return isinstance(hostaddr, tuple) and len(hostaddr) >= 2 and hostaddr[1] == 0


class SmtpapiMilter(Milter.Base):
    """One instance per SMTP connection (pymilter calls the factory per connection)."""

    def __init__(self, state: MilterState):
        self.state = state
        self.pipeline: Pipeline = state.pipeline  # this connection keeps its configuration
        self.session = self.pipeline.session()
        self.headers: list[tuple[str, bytes]] = []
        self.spool: BodySpool | None = None
        self.started = time.monotonic()
        # on_error = "accept": after a failure the message goes out untracked, not tempfailed.
        self.failed_connection = False
        self.failed_message = False
        self.in_transaction = False  # counted in MilterState, so SIGTERM can drain
        # The step whose exception the message still owes a 451 for (header and body get no
        # reply: it goes out at end of message).
        self.untrapped_stage: str | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _macros(self, *names: str) -> dict[str, str]:
        found = {}
        for name in names:
            value = self.getsymval(name)
            if value:
                found[name] = value
        return found

    def _reply(self, reply: SmtpReply) -> int:
        self.setreply(reply.code, reply.status, milter_text(reply.text))
        return Milter.REJECT if reply.is_permanent else Milter.TEMPFAIL

    def _refuse(self, stage: str, error: SmtpReplyError, recipient: str | None = None) -> int:
        """Refuse with a verdict on the mail: log it, record policy_rejection events, reply."""
        self._log_verdict(stage, error.reply)
        if is_policy_refusal(error):
            self._record_rejection(stage, error.reply, recipient)
        return self._reply(error.reply)

    def _rejection_events(self, stage: str, reply: SmtpReply, recipient: str | None) -> list:
        # The reply as the client reads it (libmilter turns each %% back into %).
        text = milter_text(reply.text).replace("%%", "%")
        line = " ".join(p for p in (reply.code, reply.status, text) if p)
        return rejection_events(self.session, stage, line, recipient, time.time())

    def _record_rejection(self, stage: str, reply: SmtpReply, recipient: str | None) -> None:
        # Nothing here may change the verdict: a refused message loses no mail, so an event
        # that cannot be built or stored is logged and the refusal goes out regardless.
        try:
            events = self._rejection_events(stage, reply, recipient)
            if events:
                self.state.record_rejections(events)
        except Exception:
            log.exception(
                "policy_rejection not recorded",
                stage=stage,
                queue_id=self.session.envelope.queue_id,
            )

    def _guard(self, stage: str, action: Callable[[], Any], recipient: str | None = None) -> int:
        """Run one stage; turn pipeline replies and failures into milter replies."""
        if self.failed_message:
            return Milter.CONTINUE  # failing open: nothing more to decide for this message
        try:
            action()
        except PolicyFailure as exc:  # logged with its traceback by the policy engine
            return self._failure(stage, exc.reply)
        except SmtpReplyError as exc:
            return self._refuse(stage, exc, recipient)
        except StoreUnavailable as exc:
            # Not an error to fail open on: the client retries and nothing is lost.
            log.warning("event store unavailable", stage=stage, error=str(exc))
            self._log_verdict(stage, STORE_DOWN)
            return self._reply(STORE_DOWN)
        except Exception:
            log.exception("internal error", stage=stage, queue_id=self.session.envelope.queue_id)
            return self._failure(stage, INTERNAL)
        return Milter.CONTINUE

    def _failure(self, stage: str, reply: SmtpReply) -> int:
        """A policy or internal error: 451 4.3.0, or with on_error = "accept" fail open.

        Failing open goes on to end of message (a connection-level ACCEPT would let every
        later message on the connection through with its X-MSYS-API header) and there
        delivers the message as it came, without that header.
        """
        if self.pipeline.config.milter.on_error != "accept":
            self._log_verdict(stage, reply)
            return self._reply(reply)
        log.warning(
            "error, message goes out untracked (on_error = accept)",
            stage=stage,
            queue_id=self.session.envelope.queue_id,
        )
        self.failed_message = True
        if stage in ("connect", "helo"):
            self.failed_connection = True
        return Milter.CONTINUE

    def queue_id(self) -> str:
        return self.session.envelope.queue_id

    def tempfail(self, stage: str, reply: SmtpReply) -> int:
        """The trap's verdict after an exception (never fails open, see ``trap``)."""
        if stage == "mail":
            self._end_transaction()  # refused: no transaction for a drain to wait for
        self._log_verdict(stage, reply)
        return self._reply(reply)

    def _log_verdict(self, stage: str, reply: SmtpReply) -> None:
        envelope = self.session.envelope
        seconds = time.monotonic() - self.started
        if self.state.metrics is not None:
            self.state.metrics.message("rejected" if reply.is_permanent else "tempfailed", seconds)
        log.info(
            "message",
            stage=stage,
            verdict=str(reply),
            queue_id=envelope.queue_id,
            client=envelope.client_address,
            mail_from=envelope.mail_from,
            ms=round(seconds * 1000, 1),
        )

    def negotiate(self, opts: list[int]) -> int:
        # pymilter's negotiate answers with every action the MTA offers (set_flags only
        # applies to MTAs without negotiation); ask for exactly ours.
        verdict = super().negotiate(opts)
        opts[0] = self._actions = opts[0] & ACTIONS
        return verdict

    # --- SMTP stages ------------------------------------------------------------------------

    @trapped("connect")
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        address = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else str(hostaddr or "")
        macros = self._macros("j", "{daemon_name}", "{client_addr}")
        local = _is_non_smtp(hostaddr)
        return self._guard(
            "connect", lambda: self.session.connect(address, hostname, macros, non_smtp=local)
        )

    @trapped("helo")
    def hello(self, hostname: str) -> int:
        return self._guard("helo", lambda: self.session.helo(hostname))

    @trapped("mail")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.started = time.monotonic()
        self.headers = []
        self.untrapped_stage = None
        self._close_spool()
        self.failed_message = self.failed_connection
        if not self._begin_transaction():
            return self._reply(STOPPING)
        macros = self._macros("i", "{auth_authen}", "{daemon_name}", "{mail_addr}")
        verdict = self._guard("mail", lambda: self.session.mail_from(_address(mailfrom), macros))
        if verdict != Milter.CONTINUE:
            self._end_transaction()  # refused: no transaction for a drain to wait for
        return verdict

    @trapped("rcpt")
    def envrcpt(self, to: str, *params: str) -> int:
        address = _address(to)
        if self.session.envelope.recipients and self.session.defers_extra_recipients():
            # One body per recipient: ask the client for a new transaction (RFC 5321 4.5.3.1.10).
            self._record_rejection("rcpt", EXTRA_RECIPIENT_DEFERRED, address)
            return self._reply(EXTRA_RECIPIENT_DEFERRED)
        return self._guard("rcpt", lambda: self.session.rcpt(address), address)

    @Milter.noreply
    @Milter.decode("bytes")
    @trapped("header", Answer.AT_EOM)
    def header(self, name: str, value: bytes) -> int:
        self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    @trapped("eoh", Answer.AT_EOM)
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    @trapped("body", Answer.AT_EOM)
    def body(self, chunk: bytes) -> int:
        if self.spool is None:
            # Lives across callbacks, closed in envfrom/abort/close.
            self.spool = BodySpool(self.pipeline.config.milter.spool_memory_limit)
        self.spool.write(chunk)
        return Milter.CONTINUE

    def _begin_transaction(self) -> bool:
        if not self.in_transaction:
            self.in_transaction = self.state.transaction_started()
        return self.in_transaction

    def _end_transaction(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.state.transaction_ended()

    @trapped("eom")
    def eom(self) -> int:
        try:
            if self.untrapped_stage is not None:
                return answer_failure(self, self.untrapped_stage)
            # Before the slot: the data-phase policies may wait on whatever a site's policy
            # asks (a network lookup, up to [policy] timeout), and the suppression list on
            # the store; neither needs the body, and waiting must not hold up the others.
            self.session.envelope.macros.update(self._macros("i"))
            decided: list[Decision] = []
            verdict = self._guard("eom", lambda: decided.append(self.session.decide(self.headers)))
            if verdict != Milter.CONTINUE:
                return verdict
            # Loading and rewriting a body takes memory in proportion to its size: a few at a
            # time (one by default) keep the milter's memory bounded however many connections
            # end at once (SPEC 11), and under the GIL more at once would not finish sooner.
            with self.state.rewrite_slots:
                verdict, events, result = self._eom(decided[0] if decided else None)
            if verdict != Milter.CONTINUE:
                return verdict
            # Outside the slot: waiting for the commit holds no body, and the sessions that
            # wait together share one commit (group commit), so the events of many messages
            # cost one flush. The MTA already has the changes; it applies them only if this
            # reply is ACCEPT, which goes out once the events are durable.
            verdict = self._guard("eom", lambda: self._record(events, result))
            return Milter.ACCEPT if verdict == Milter.CONTINUE else verdict
        finally:
            self._end_transaction()

    def _eom(self, decided: Decision | None) -> tuple[int, list[dict], MessageResult | None]:
        """Rewrite and hand the MTA its changes: (CONTINUE, events to record, result), or
        the final verdict. The result comes back without its bodies (they are sent).
        ``decided`` None: the decision failed open (on_error = accept)."""
        result: list[MessageResult] = []
        verdict = self._guard("eom", lambda: result.append(self._end_of_message(decided)))
        if verdict != Milter.CONTINUE:
            return verdict, [], None
        if self.failed_message:
            return self._accept_untracked(), [], None
        try:
            self._reinject(result[0])
        except ReinjectError as exc:
            log.warning(
                "split re-injection failed", error=str(exc), queue_id=self.session.envelope.queue_id
            )
            reply = SmtpReply("451", "4.3.0", "could not queue personalised copies")
            return self._reply(reply), [], None
        events: list[dict] = []
        verdict = self._guard("eom", lambda: events.extend(self._events(result[0])))
        if verdict != Milter.CONTINUE:
            return verdict, [], None
        self._apply(result[0])
        for copy in result[0].copies:
            copy.body = None  # sent: the memory goes back before the commit is waited for
        return Milter.CONTINUE, events, result[0]

    def _accept_untracked(self) -> int:
        """Fail open: the message as it came, less the accepted families' headers (X-MSYS-API
        and the vendors', never delivered) and less its suppressed recipients (an error is no
        reason to mail them)."""
        try:
            gone = self.session.suppressed_failing_open()
            events = [e for g in gone for e in self._rejection_events("eom", g.reply, g.recipient)]
            if events:
                self.state.record(events)  # SmtpReplyError(451) when the store is down
        except SmtpReplyError as exc:
            return self._refuse("eom", exc)
        except StoreUnavailable:
            self._log_verdict("eom", STORE_DOWN)
            return self._reply(STORE_DOWN)
        for suppressed in gone:
            self.delrcpt(f"<{suppressed.recipient}>")
        config = self.session.pipeline.config.smtpapi.for_listener(self.session.envelope.listener)
        for edit in field_deletions(self.headers, config.accept_headers):
            self.chgheader(edit.name, edit.index, None)
        return Milter.ACCEPT

    @trapped("abort", Answer.NEVER)
    def abort(self) -> int:
        self.untrapped_stage = None
        try:
            self.session.reset()
        finally:  # whatever failed, a transaction left counted would hold up a drain
            self._close_spool()
            self._end_transaction()
        return Milter.CONTINUE

    @trapped("close", Answer.NEVER)
    def close(self) -> int:
        try:
            self._close_spool()
        finally:
            self._end_transaction()
        return Milter.CONTINUE

    # --- end of message ---------------------------------------------------------------------

    def _body(self) -> tuple[bytes | None, int]:
        if self.spool is None:
            return b"", 0
        size = self.spool.size
        if size > memory.largest_rewritten_body(self.pipeline.config):
            # Never loaded (over max_tracked_size or the MTA's size limit: it would go out
            # untracked anyway): the bound on memory per connection.
            return None, size
        return self.spool.read(), size

    def _whole_body(self) -> bytes:
        if self.spool is None:
            return b""
        return self.spool.read()

    def _end_of_message(self, decided: Decision | None) -> MessageResult:
        assert decided is not None  # _guard runs nothing once the message failed open
        body, size = self._body()
        return self.session.build_copies(
            decided, body, shared=self.session.shares_body(), body_size=size
        )

    def _reinject(self, result: MessageResult) -> None:
        """Split mode: hand the other recipients' copies to ``reinject_to`` before replying;
        each copy's injection event gets the queue id the listener gave it.

        Before the events are stored, so they carry those ids (the MTA's log joins on them):
        if the store then fails, the client is tempfailed and its retry sends these copies
        again (a duplicate, never a loss), as after any later re-injection failure.
        """
        others = result.copies[1:]
        if not others:
            return
        queue_ids = Reinjector(self.pipeline.config.smtpapi.reinject_to).send(
            self.session.envelope.mail_from, self.headers, self._whole_body(), result, others
        )
        for copy, queue_id in zip(others, queue_ids, strict=True):
            if copy.injection is not None:
                copy.injection["mta_queue_id"] = queue_id

    def _events(self, result: MessageResult) -> list[dict]:
        events = [c.injection for c in result.copies if c.injection is not None]
        for gone in result.suppressed:  # in the same commit: the message is accepted after it
            events += self._rejection_events("eom", gone.reply, gone.recipient)
        return events

    def _record(self, events: list[dict], result: MessageResult | None) -> None:
        if events:
            self.state.record(events)  # raises SmtpReplyError(451) when the store is down
        if result is not None:
            self._log_result(result)

    def _apply(self, result: MessageResult) -> None:
        """The first copy is this transaction's; the re-injected and the suppressed recipients
        leave it (split mode's re-injection never saw the suppressed ones)."""
        first, others = result.copies[0], result.copies[1:]
        if first.return_path:  # bounce_domain: bounces and complaints come back to us
            self.chgfrom(f"<{first.return_path}>")
        for copy in others:
            self.delrcpt(f"<{copy.recipient}>")
        for gone in result.suppressed:
            self.delrcpt(f"<{gone.recipient}>")
        for edit in result.header_edits + first.header_edits:
            if edit.index == 0:
                self.addheader(edit.name, edit.value.decode("latin-1"))
            else:
                value = None if edit.value is None else edit.value.decode("latin-1")
                self.chgheader(edit.name, edit.index, value)
        if first.body is not None:
            for start in range(0, len(first.body), REPLACE_CHUNK):
                self.replacebody(first.body[start : start + REPLACE_CHUNK])

    def _log_result(self, result: MessageResult) -> None:
        envelope = self.session.envelope
        copy = result.copies[0]
        untracked = result.untracked
        tracked = untracked is None
        seconds = time.monotonic() - self.started
        if self.state.metrics is not None:
            verdict = "tracked" if tracked else "untracked"
            self.state.metrics.message(verdict, seconds, result.links_tracked, result.analysis)
        message_log.get().info(
            "message",
            verdict="accept",
            queue_id=envelope.queue_id,
            transmission_id=result.transmission_id or None,
            recipients=len(envelope.recipients) - len(result.suppressed),
            suppressed=len(result.suppressed) or None,
            tracked=tracked,
            untracked=None if untracked is None else untracked.reason.value,
            untracked_reason=None if untracked is None else str(untracked),
            links=result.links_tracked,
            analysis=result.analysis,
            pixel=copy.stats.pixel,
            links_beyond_limit=copy.stats.links_beyond or None,
            vendor_headers=result.vendor_headers,
            worker=self.state.worker,
            ms=round(seconds * 1000, 1),
        )

    def _close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
