"""The message pipeline: header, policies, settings, rewrite, tokens, injection events.

One :class:`Pipeline` per configuration (rebuilt on reload, never mutated); one
:class:`Session` per SMTP connection. A front end calls the session's methods at the SMTP
stages it sees (the milter at its callbacks, ``smtpapi-milter rewrite`` all at once) and
gets back either a :class:`MessageResult` or an :class:`~.replies.SmtpReplyError`.
Nothing here knows about libmilter.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import context as cv
from . import list_unsubscribe, multi_recipient, vendor_headers, xmsysapi
from .bounces_in.return_path import ReturnPaths
from .config import Config
from .envelope import Envelope, HeaderEdit
from .events.model import injection_event
from .ids import IdGenerator, IdUnavailable, message_id
from .memo import remember_short
from .policy import PolicyContext, PolicySet
from .replies import TRANSMISSION_ID_UNAVAILABLE, SmtpReplyError
from .rewrite import mime, qp, size_limit
from .rewrite.analysis import AnalysisCache, BodyAnalysis, PartAnalysis, PartPlan
from .rewrite.edits import ERRORS as ENCODE_ERRORS
from .rewrite.edits import apply as apply_edits
from .rewrite.edits import to_bytes as edits_in_bytes
from .rewrite.track import TrackStats, values
from .settings import TagRegistry, TrackingSettings, resolve
from .suppression.enforce import Suppressed, SuppressionCheck, suppressed_recipients
from .tokens import TokenCodec, TrackingData
from .tracked_links import TrackedLinks
from .untracked import Reason, Untracked

log = structlog.get_logger("smtpapi_milter.pipeline")


@dataclass
class RecipientCopy:
    """What one recipient (or, in shared mode, everyone) receives."""

    recipient: str | None
    settings: TrackingSettings | None
    body: bytes | None = None  # None: the body goes out as it came in
    header_edits: list[HeaderEdit] = field(default_factory=list)
    message_id: str = ""
    stats: TrackStats = field(default_factory=TrackStats)
    injection: dict[str, Any] | None = None
    untracked: Untracked | None = None  # why this copy goes out as it came, if it does
    return_path: str = ""  # the envelope sender it leaves with ("": the sender's own)


@dataclass
class MessageResult:
    transmission_id: str
    header_edits: list[HeaderEdit]
    copies: list[RecipientCopy]
    analysis: str | None = None  # the body's analysis: "new", "reused" (cached) or not needed
    # Recipients on the suppression list: they leave the transaction, nobody gets a copy.
    suppressed: list[Suppressed] = field(default_factory=list)
    vendor_headers: str | None = None  # the other vendor's header family read, if any

    @property
    def untracked(self) -> Untracked | None:
        """Why the (first) copy goes out untracked; None when it is tracked."""
        return self.copies[0].untracked

    @property
    def links_tracked(self) -> int:
        return sum(c.stats.html_links + c.stats.text_links for c in self.copies)


class Pipeline:
    """Everything that stays the same from message to message under one configuration."""

    def __init__(
        self,
        config: Config,
        policies: PolicySet | None = None,
        codec: TokenCodec | None = None,
        ids: IdGenerator | None = None,
        tag_registry: TagRegistry | None = None,
        clock: Callable[[], float] = time.time,
        suppression: SuppressionCheck | None = None,
    ):
        self.config = config
        self.suppression = suppression  # None: no list to enforce (``rewrite``, tests)
        self.policies = policies or PolicySet.empty()
        self.codec = codec or TokenCodec.from_config(config)
        self.return_paths = ReturnPaths.from_codec(self.codec)
        self.ids = ids or IdGenerator(config.smtpapi.node_id)
        self.tag_registry = tag_registry or TagRegistry()
        self.clock = clock
        # One newsletter arrives as one transaction per recipient: its body is analysed once.
        self.analyses = AnalysisCache(
            config.milter.analysis_cache, max_links=config.smtpapi.max_tracked_links
        )

    def session(self) -> Session:
        return Session(self)


class Session:
    """One SMTP connection: runs each policy phase when its SMTP stage happens."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.envelope = Envelope()
        self.connection_vars = cv.Variables()
        self.message_vars = self.connection_vars.child()
        # What end_of_message learnt before it refused a message (for policy_rejection events).
        self.header: xmsysapi.XMsysApi | None = None
        self.transmission_id = ""

    def _run(
        self,
        phase: str,
        variables: cv.Variables,
        recipient: str | None = None,
        header: xmsysapi.XMsysApi | None = None,
    ) -> None:
        policies = self.pipeline.policies
        if not policies.has_hook(phase):
            return  # three or more phases a message: most sites hook one or two
        ctx = PolicyContext(
            phase, self.envelope, variables, recipient, header.raw if header else None
        )
        policies.run(phase, ctx, self.pipeline.config.policy.timeout)

    def connect(
        self,
        client_address: str,
        client_name: str = "",
        macros: dict[str, str] | None = None,
        non_smtp: bool = False,
    ) -> None:
        """A client connected; ``non_smtp`` for mail the MTA got otherwise (no client)."""
        self.envelope.client_address = client_address
        self.envelope.client_name = client_name
        self.envelope.macros.update(macros or {})
        self.envelope.non_smtp = non_smtp
        self._run("validate_connect", self.connection_vars)

    def helo(self, name: str) -> None:
        self.envelope.helo = name
        self._run("validate_ehlo", self.connection_vars)

    def mail_from(self, address: str, macros: dict[str, str] | None = None) -> None:
        self.reset()
        self.envelope.macros.update(macros or {})
        self.envelope.mail_from = address
        if self.envelope.auth_user:  # SMTP AUTH names the customer, as Momentum's auth does
            self.connection_vars.set(cv.CUSTOMER_ID, self.envelope.auth_user)
        self._run("validate_mailfrom", self.message_vars)

    def rcpt(self, address: str) -> None:
        """Run validate_rcptto; the recipient joins the transaction only if it passes."""
        self._run("validate_rcptto", self.message_vars, address)
        self.envelope.recipients.append(address)

    def _multi_recipient(self) -> str:
        return self.pipeline.config.smtpapi.for_listener(self.envelope.listener).multi_recipient

    def defers_extra_recipients(self) -> bool:
        """Whether a second RCPT must get 452 4.5.3 (``multi_recipient = defer``)."""
        return multi_recipient.defers_extra_recipients(
            self._multi_recipient(), self.envelope.non_smtp
        )

    def shares_body(self) -> bool:
        """Whether all recipients get one body whose links name no recipient."""
        return multi_recipient.shares_body(
            self._multi_recipient(),
            self.pipeline.config.smtpapi.reinject_to,
            self.envelope.non_smtp,
            len(self.envelope.recipients),
        )

    def reset(self) -> None:
        self.envelope.reset_transaction()
        self.message_vars = self.connection_vars.child()
        self.header, self.transmission_id = None, ""

    def suppressed_failing_open(self) -> list[Suppressed]:
        """The suppressed recipients of a message going out as it came (``on_error =
        "accept"`` after an error): its settings were never read, so it is checked as the
        mail most lists are about, non-transactional. SmtpReplyError if nobody remains."""
        check, recipients = self.pipeline.suppression, self.envelope.recipients
        if check is None or not recipients:
            return []
        return suppressed_recipients(check, [(r, None) for r in recipients])

    def end_of_message(
        self,
        headers: list[tuple[str, bytes]],
        body: bytes | None,
        shared: bool = False,
        body_size: int | None = None,
    ) -> MessageResult:
        """Decide and build what is delivered: one copy per recipient, or one shared copy.

        ``body`` None means the front end did not load it (``body_size`` bytes, over
        max_tracked_size): the message is still validated and recorded, never rewritten.
        Raises SmtpReplyError with the reply the client must get.

        :meth:`decide` then :meth:`build_copies`, for a front end that has no reason to
        hold the body while the first runs.
        """
        return self.build_copies(self.decide(headers), body, shared, body_size)

    def decide(self, headers: list[tuple[str, bytes]]) -> Decision:
        """What end of message decides without the body: the headers read, the data-phase
        policies run (which may wait on anything a site's policy asks), each recipient's
        variables, and who is on the suppression list. Raises SmtpReplyError as
        :meth:`end_of_message` does."""
        self.envelope.headers = headers
        config = self.pipeline.config.smtpapi.for_listener(self.envelope.listener)
        read = vendor_headers.read(headers, config.accept_headers)
        self.header = header = read.settings  # X-MSYS-API, over another vendor's header
        self._run("validate_data_spool", self.message_vars, header=read.xmsysapi)
        check = self.pipeline.suppression
        recipients: list[_Recipient] = []
        for recipient in list(self.envelope.recipients) or [None]:
            variables = self.message_vars.child()
            self._run("validate_data_spool_each_rcpt", variables, recipient, read.xmsysapi)
            # Resolved now only when the list is checked (the kind of mail decides which
            # entries apply); build_copies resolves them otherwise.
            settings = None
            if check and recipient is not None:
                settings = resolve(config, header, variables, self.pipeline.tag_registry)
            recipients.append(_Recipient(recipient, variables, settings))
        suppressed: list[Suppressed] = []
        if check is not None and recipients[0].address is not None:
            suppressed = suppressed_recipients(check, [(r.address, r.settings) for r in recipients])
            gone = {s.recipient for s in suppressed}
            recipients = [r for r in recipients if r.address not in gone]
        return Decision(read, recipients, suppressed)

    def build_copies(
        self,
        decision: Decision,
        body: bytes | None,
        shared: bool = False,
        body_size: int | None = None,
    ) -> MessageResult:
        """The copies :meth:`decide` settled on, built from the body (see
        :meth:`end_of_message`)."""
        builder = _CopyBuilder(self, self.header, body, body_size)
        copies = []
        for index, r in enumerate(decision.recipients):
            if shared:
                if index == 0:
                    copies.append(builder.build(None, self.message_vars, 0))
            else:
                copies.append(builder.build(r.address, r.variables, index, r.settings))
            self.transmission_id = builder.transmission_id
        read = decision.read
        return MessageResult(
            builder.transmission_id,
            read.edits,
            copies,
            builder.analysed,
            decision.suppressed,
            read.family,
        )


@dataclass
class Decision:
    """What :meth:`Session.decide` settled before the body is needed."""

    read: vendor_headers.HeadersRead
    recipients: list[_Recipient]
    suppressed: list[Suppressed]


@dataclass
class _Recipient:
    address: str | None
    variables: cv.Variables
    settings: TrackingSettings | None  # resolved early for the suppression check


class _CopyBuilder:
    """Builds each recipient's copy of one message; shares the parsed structure."""

    def __init__(
        self,
        session: Session,
        header: xmsysapi.XMsysApi | None,
        body: bytes | None,
        body_size: int | None,
    ):
        self.pipeline = session.pipeline
        self.envelope = session.envelope
        self.header = header
        self.body = body if body is not None else b""
        self.body_size = len(body) if body is not None else body_size or 0
        self.config = self.pipeline.config.smtpapi.for_listener(self.envelope.listener)
        self.transmission_id = ""
        self.injected_at = self.pipeline.clock()
        # The body is analysed when a copy first tracks something (most mail tracks nothing);
        # analysis stays None if it must go out untouched, and the reason is logged.
        self.analysis: BodyAnalysis | None = None
        self.analysed: str | None = None  # "new" or "reused" (from the cache), once done
        self.mta_limit = size_limit.MtaSizeLimit(
            self.config.mta_message_size_limit,
            self.envelope.headers,
            self.body_size,
            len(self.envelope.recipients),
        )
        self.untracked = self._untracked()

    def _analyse(self) -> BodyAnalysis | None:
        if self.analysed is None and self.untracked is None:
            analysis, reused = self.pipeline.analyses.get(self.envelope.headers, self.body)
            self.analysed = "reused" if reused else "new"
            self.untracked = analysis.untracked
            if self.untracked is None:
                self.analysis = analysis
        return self.analysis

    def _untracked(self) -> Untracked | None:
        if self.body_size > self.config.max_tracked_size:
            limit = self.config.max_tracked_size
            return Untracked(Reason.TOO_BIG, f"{self.body_size} > {limit} bytes")
        if over := self.mta_limit.already_over():
            return over
        if self.envelope.raw_headers("DKIM-Signature") and not self.config.track_dkim_signed:
            return Untracked(Reason.DKIM_SIGNED)
        return None

    def settings(self, variables: cv.Variables) -> TrackingSettings:
        return resolve(self.config, self.header, variables, self.pipeline.tag_registry)

    def build(
        self,
        recipient: str | None,
        variables: cv.Variables,
        index: int,
        settings: TrackingSettings | None = None,
    ) -> RecipientCopy:
        settings = settings or self.settings(variables)
        copy = RecipientCopy(recipient, settings)
        unsubscribe = list_unsubscribe.offered(
            settings, recipient, self.envelope.headers, self.config.track_dkim_signed
        )
        if not settings.tracks_anything:
            copy.untracked = Untracked(Reason.NO_TRACKING)
            if not unsubscribe:
                return copy
        try:
            if not self.transmission_id:
                self.transmission_id = self.pipeline.ids.transmission_id()
            copy.message_id = message_id(self.transmission_id, index)
            data = self._tracking_data(copy, settings)
            if settings.tracks_anything and self._analyse() is not None:
                pipeline = self.pipeline
                links = TrackedLinks(pipeline.config, pipeline.codec, settings, data)
                self._rewrite(copy, settings, links)
            copy.untracked = copy.untracked or self.untracked
            if copy.untracked is not None and copy.untracked.reason is Reason.OVER_MTA_LIMIT:
                return copy  # delivered as it came: no injection claims a tracked message
            if unsubscribe:
                url = list_unsubscribe.url(self.pipeline, settings, data)
                copy.header_edits += list_unsubscribe.header_edits(self.envelope.headers, url)
            copy.injection = self._injection(copy, settings, index)  # takes an event id too
            copy.return_path = self.pipeline.return_paths.for_copy(  # None: shared
                settings.bounce_domain,
                self.envelope.mail_from,
                self.transmission_id,
                index if recipient else None,
            )
        except IdUnavailable:
            raise SmtpReplyError(TRANSMISSION_ID_UNAVAILABLE) from None
        return copy

    def _tracking_data(self, copy: RecipientCopy, settings: TrackingSettings) -> TrackingData:
        injected = int(self.injected_at)
        return TrackingData(
            kind="open",
            transmission_id=self.transmission_id,
            message_id=copy.message_id,
            rcpt_to=copy.recipient or "",
            injection_time=injected,
            expires=injected + settings.link_expiry if settings.link_expiry else 0,
            campaign_id=settings.campaign_id,
            tags=settings.tags,
            metadata=settings.metadata,
            customer_id=settings.customer_id,
        )

    def _rewrite(
        self, copy: RecipientCopy, settings: TrackingSettings, links: TrackedLinks
    ) -> None:
        assert self.analysis is not None
        problems = self.analysis.part_problems
        for problem, fields in problems:
            log.info(problem, **fields)
        parts = [(p, p.plan(settings)) for p in (self.analysis.html, self.analysis.text) if p]
        plans = [(plan, part.part.cte) for part, plan in parts]
        copy.untracked = self.mta_limit.clearly_over(plans, links.shortest_click_length)
        if copy.untracked is not None:
            return
        changes = []
        for part, plan in parts:
            change = _track_part(part, plan, links, copy.stats)
            if change is not None:
                changes.append(change)
        if not changes:
            why = Reason.NO_USABLE_PART if problems else Reason.NOTHING_TO_TRACK
            copy.untracked = Untracked(why, "; ".join(text for text, _ in problems))
            return
        body, root_cte = mime.apply_changes(self.body, changes)
        copy.untracked = self.mta_limit.over_with(len(body))
        if copy.untracked is not None:
            copy.stats = TrackStats()
            return
        copy.body = body
        if root_cte is not None:
            copy.header_edits.append(_cte_edit(self.envelope.headers, root_cte))

    def _injection(
        self, copy: RecipientCopy, settings: TrackingSettings, index: int
    ) -> dict[str, Any]:
        from_header = self.envelope.header("From") or ""
        return injection_event(
            event_id=self.pipeline.ids.event_id(),
            transmission_id=self.transmission_id,
            message_id=copy.message_id,
            rcpt_to=copy.recipient,
            campaign_id=settings.campaign_id,
            customer_id=settings.customer_id,
            tags=settings.tags,
            metadata=settings.metadata,
            msg_from=self.envelope.mail_from,
            friendly_from=_friendly_from(from_header),
            subject=self.envelope.header("Subject") or "",
            injection_time=self.injected_at,
            msg_size=len(copy.body) if copy.body is not None else self.body_size,
            # The first copy stays in the MTA's transaction; split mode's others get the
            # queue id of their re-injection (mta.reinject).
            mta_queue_id=self.envelope.queue_id if index == 0 else "",
        )


def _cte_edit(headers: list[tuple[str, bytes]], cte: str) -> HeaderEdit:
    present = any(name.lower() == "content-transfer-encoding" for name, _ in headers)
    return HeaderEdit("Content-Transfer-Encoding", 1 if present else 0, cte.encode("ascii"))


def _track_part(
    part: PartAnalysis, plan: PartPlan, links: TrackedLinks, stats: TrackStats
) -> mime.PartChange | None:
    """One top part of one copy, tracked: its new body, or None if nothing changes."""
    if plan.links_beyond:
        stats.links_beyond += plan.links_beyond
        log.warning(  # a newsletter has tens or hundreds: this one is odd, or an attack
            "part has more links than max_tracked_links: the rest left as they are",
            part="html" if part.is_html else "text",
            links_beyond=plan.links_beyond,
        )
    if not plan.sites:
        return None
    made = values(plan.sites, links)
    replacements: list[bytes] = []
    try:
        if plan.spans is not None:
            # Only the new bytes: the splice and the edits below take the places from the
            # plan, not from (start, end, text) edits made and taken apart for each site
            # (bulk: 0.193 -> ~0.178 ms CPU/msg with context.py's walk, bench/milter_cpu.py).
            replacements = [new.encode(part.charset, ENCODE_ERRORS) for new in made]
            byte_edits = None
        else:
            edits = [(s.start, s.end, new) for s, new in zip(plan.sites, made, strict=True)]
            byte_edits = edits_in_bytes(part.text, part.decoded, edits, part.charset)
    except (UnicodeError, ValueError):
        log.info("part left untracked: charset cannot encode the links", charset=part.part.charset)
        return None
    plan.count(stats, html=part.is_html)
    cte = part.part.cte
    if cte == "quoted-printable" and plan.regions is not None:
        # Only the encoded lines the edits touch change; the sender's others stay as written.
        return mime.PartChange(part.part, part.splice(plan, replacements), cte)
    if byte_edits is None:
        assert plan.spans is not None
        byte_edits = [(s, e, new) for (s, e), new in zip(plan.spans, replacements, strict=True)]
    if cte == "quoted-printable":
        new_body = qp.splice(part.raw, part.decoded, byte_edits, part.eol, part.bare_cr)
        return mime.PartChange(part.part, new_body, cte)
    new_data = apply_edits(part.decoded, byte_edits)
    line = mime.base64_line_length(part.raw) if cte == "base64" else mime.BASE64_LINE
    new_body, new_cte = mime.encode_transfer(new_data, cte, part.eol, line)
    return mime.PartChange(part.part, new_body, new_cte)


@remember_short(998)  # a campaign's From is the same in every message
def _friendly_from(from_header: str) -> str:
    """The address in a From value (the whole value if none parses out of it)."""
    return email.utils.parseaddr(from_header)[1] or from_header
