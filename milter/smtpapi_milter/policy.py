"""Site policy: Python modules with Momentum's phase hooks (SPEC 3).

A policy is a ``*.py`` file in the policy directory defining any of the hooks in
:data:`PHASES`; each is called with one :class:`PolicyContext`. Files load in name order,
so ``10-auth.py`` runs before ``50-campaigns.py``. A whole directory loads or nothing does,
which lets the milter reload on SIGHUP and keep the old set when a new file is broken. Only
files that root or the milter's own user alone can change are run, from the bytes that were
checked (:mod:`.policy_files`).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from .context import Variables
from .envelope import Envelope
from .policy_files import PolicySource, UntrustedPolicy, read_policy_directory
from .replies import SmtpReply, SmtpReplyError

PHASES = (
    "validate_connect",
    "validate_ehlo",
    "validate_mailfrom",
    "validate_rcptto",
    "validate_data_spool",
    "validate_data_spool_each_rcpt",
)

POLICY_FAILED_TEXT = "temporary failure in message policy, try again later"

log = structlog.get_logger("smtpapi_milter.policy")
_load_lock = threading.Lock()
_load_generation = 0


class PolicyLoadError(Exception):
    """A policy file cannot be used; the message names the file and why."""


class PolicyVerdict(SmtpReplyError):
    """A policy's own reject or tempfail: its code and text reach the client as they are."""


class PolicyFailure(SmtpReplyError):
    """A policy raised: 451 4.3.0, the traceback is logged, the client retries."""


class PolicyContext:
    """What a policy hook sees and may change. One object per hook call.

    Read: ``phase``, ``client_address``, ``client_name``, ``helo``, ``mail_from``,
    ``recipients``, ``recipient`` (the current one, at ``validate_rcptto`` and
    ``validate_data_spool_each_rcpt``), ``queue_id``, ``listener``, ``non_smtp`` (mail the
    MTA did not get over SMTP, e.g. Postfix's sendmail command), ``macro(name)``,
    ``header(name)``, ``xmsysapi`` (the parsed header as a dict, or None).
    Change: ``set(name, value)`` (strings only), ``get(name)``, ``reject(text)``,
    ``tempfail(text)``.
    """

    def __init__(
        self,
        phase: str,
        envelope: Envelope,
        variables: Variables,
        recipient: str | None = None,
        xmsysapi: dict[str, Any] | None = None,
    ):
        self.phase = phase
        self._envelope = envelope
        self._variables = variables
        self.recipient = recipient
        self.xmsysapi = xmsysapi
        self.log = log.bind(phase=phase, queue_id=envelope.queue_id)
        self._expired = False

    client_address = property(lambda self: self._envelope.client_address)
    client_name = property(lambda self: self._envelope.client_name)
    helo = property(lambda self: self._envelope.helo)
    mail_from = property(lambda self: self._envelope.mail_from)
    recipients = property(lambda self: tuple(self._envelope.recipients))
    queue_id = property(lambda self: self._envelope.queue_id)
    listener = property(lambda self: self._envelope.listener)
    non_smtp = property(lambda self: self._envelope.non_smtp)

    def macro(self, name: str) -> str | None:
        """An MTA macro such as ``{auth_authen}`` or ``{daemon_name}``."""
        return self._envelope.macros.get(name)

    def header(self, name: str) -> str | None:
        """The first header called ``name``, unfolded and decoded; None before DATA."""
        return self._envelope.header(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._variables.get(name, default)

    def set(self, name: str, value: str) -> None:
        """Set a context variable for this phase's scope. Values must be strings."""
        self._check_alive()
        self._variables.set(name, value)

    def reject(self, text: str, code: str = "550", status: str = "5.7.1") -> None:
        """End the transaction (or this recipient, at validate_rcptto) with a 5xx reply."""
        self._check_alive()
        raise PolicyVerdict(_reply(code, status, text, "5"))

    def tempfail(self, text: str, code: str = "451", status: str = "4.7.1") -> None:
        """Ask the client to try again later with a 4xx reply."""
        self._check_alive()
        raise PolicyVerdict(_reply(code, status, text, "4"))

    def _check_alive(self) -> None:
        # A hook that outlived [policy] timeout was answered 451 already: whatever it does
        # when it wakes up must not leak into the connection's next transaction.
        if self._expired:
            raise RuntimeError(f"{self.phase} timed out; the message was already tempfailed")


def _reply(code: str, status: str, text: str, klass: str) -> SmtpReply:
    if not str(code).startswith(klass):
        raise ValueError(f"policy reply code {code!r} must be {klass}xx here")
    # Replies go on one SMTP line: no CR/LF smuggling, and libmilter's length limit.
    clean = " ".join(str(text).split())[:900]
    return SmtpReply(str(code), str(status), clean)


@dataclass(frozen=True)
class Policy:
    name: str
    path: str
    hooks: dict[str, Callable[[PolicyContext], Any]]


class PolicySet:
    """An immutable, ordered set of loaded policies."""

    def __init__(self, policies: list[Policy], directory: str = ""):
        self.policies = tuple(policies)
        self.directory = directory
        self.phases = frozenset(phase for policy in self.policies for phase in policy.hooks)

    @classmethod
    def empty(cls) -> PolicySet:
        return cls([])

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PolicySet:
        """Load every ``*.py`` in ``directory`` in file-name order, or raise PolicyLoadError.

        A missing directory is an empty policy set (the default location need not exist).
        """
        root = Path(directory)
        try:
            sources = read_policy_directory(root)
        except (UntrustedPolicy, OSError) as exc:
            raise PolicyLoadError(str(exc)) from exc
        if sources is None:
            return cls([], str(root))
        return cls([load_source(source) for source in sources], str(root))

    def has_hook(self, phase: str) -> bool:
        """Whether any policy hooks ``phase`` (if none does, its context need not be made)."""
        return phase in self.phases

    def run(self, phase: str, ctx: PolicyContext, timeout: float = 0) -> None:
        """Call every policy's ``phase`` hook in order, each for at most ``timeout`` seconds.

        A policy's verdict propagates unchanged; any other exception, or a hook still running
        after ``timeout`` (0: no limit), becomes PolicyFailure (451 4.3.0) with the traceback
        or the timeout logged, so a bug in a policy never loses mail nor stalls the MTA.
        """
        for policy in self.policies:
            hook = policy.hooks.get(phase)
            if hook is None:
                continue
            try:
                if timeout > 0:
                    _RUNNER.call(hook, ctx, timeout)
                else:
                    hook(ctx)
            except PolicyVerdict:
                raise
            except _TimedOut:
                ctx._expired = True
                log.error(
                    "policy timed out",
                    policy=policy.name,
                    phase=phase,
                    queue_id=ctx.queue_id,
                    timeout=timeout,
                )
                raise PolicyFailure(SmtpReply("451", "4.3.0", POLICY_FAILED_TEXT)) from None
            except Exception:
                log.exception(
                    "policy raised", policy=policy.name, phase=phase, queue_id=ctx.queue_id
                )
                raise PolicyFailure(SmtpReply("451", "4.3.0", POLICY_FAILED_TEXT)) from None

    def describe(self) -> list[str]:
        return [f"{p.name}: {', '.join(p.hooks) or '(no hooks)'}" for p in self.policies]


class _TimedOut(Exception):
    """A hook did not return within [policy] timeout."""


class _Job:
    __slots__ = ("ctx", "done", "error", "hook")

    def __init__(self, hook: Callable[[PolicyContext], Any], ctx: PolicyContext):
        self.hook = hook
        self.ctx = ctx
        self.done = threading.Event()
        self.error: BaseException | None = None


class _HookRunner:
    """Runs hooks on reusable threads, so the caller can stop waiting for one that hangs.

    Python cannot stop a thread: a hung hook keeps its thread, and the caller answers 451
    and goes on. A thread whose hook returns (however late) goes back to the idle list, so
    there are never more threads than hooks running at once, and a handover costs a queue
    put and an event wait rather than a thread start.
    """

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[_Job]] = []
        self._lock = threading.Lock()

    def call(
        self, hook: Callable[[PolicyContext], Any], ctx: PolicyContext, timeout: float
    ) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="policy", daemon=True).start()
        job = _Job(hook, ctx)
        inbox.put(job)
        if not job.done.wait(timeout):
            raise _TimedOut
        if job.error is not None:
            raise job.error

    def _serve(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = inbox.get()
            try:
                job.hook(job.ctx)
            except BaseException as exc:  # handed to the caller, which decides
                job.error = exc
            job.done.set()
            with self._lock:
                self._idle.append(inbox)


# Process-wide, like a thread pool: it outlives every PolicySet a reload replaces.
_RUNNER = _HookRunner()


def load_source(source: PolicySource) -> Policy:
    """Run one policy's checked bytes as a fresh module and collect its hooks.

    The code comes from ``source.source`` only (never re-read by path), so swapping the file
    after it was checked changes nothing that runs."""
    global _load_generation
    with _load_lock:
        _load_generation += 1
        # A fresh module name per load: a reload never mutates modules the old set uses.
        stem = Path(source.name).stem.replace("-", "_")
        module_name = f"smtpapi_policy_{_load_generation}_{stem}"
    module = ModuleType(module_name)
    module.__file__ = source.path
    try:
        code = compile(source.source, source.path, "exec", dont_inherit=True)
        # In sys.modules while it runs, as an import would be (dataclasses look it up).
        sys.modules[module_name] = module
        exec(code, module.__dict__)
    except Exception as exc:
        raise PolicyLoadError(f"{source.path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop(module_name, None)
    return Policy(source.name, source.path, _hooks(module, Path(source.path)))


def _hooks(module: ModuleType, path: Path) -> dict[str, Callable[[PolicyContext], Any]]:
    hooks = {}
    for phase in PHASES:
        hook = getattr(module, phase, None)
        if hook is None:
            continue
        if not callable(hook):
            raise PolicyLoadError(f"{path}: {phase} is not a function")
        hooks[phase] = hook
    return hooks
