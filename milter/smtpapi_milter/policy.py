"""Site policy: Python modules with Momentum's phase hooks (SPEC 3).

A policy is a ``*.py`` file in the policy directory defining any of the hooks in
:data:`PHASES`; each is called with one :class:`PolicyContext`. Files load in name order,
so ``10-auth.py`` runs before ``50-campaigns.py``. A whole directory loads or nothing does,
which lets the milter reload on SIGHUP and keep the old set when a new file is broken.
"""

from __future__ import annotations

import importlib.util
import os
import stat
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
    ``validate_data_spool_each_rcpt``), ``queue_id``, ``listener``, ``macro(name)``,
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

    client_address = property(lambda self: self._envelope.client_address)
    client_name = property(lambda self: self._envelope.client_name)
    helo = property(lambda self: self._envelope.helo)
    mail_from = property(lambda self: self._envelope.mail_from)
    recipients = property(lambda self: tuple(self._envelope.recipients))
    queue_id = property(lambda self: self._envelope.queue_id)
    listener = property(lambda self: self._envelope.listener)

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
        self._variables.set(name, value)

    def reject(self, text: str, code: str = "550", status: str = "5.7.1") -> None:
        """End the transaction (or this recipient, at validate_rcptto) with a 5xx reply."""
        raise PolicyVerdict(_reply(code, status, text, "5"))

    def tempfail(self, text: str, code: str = "451", status: str = "4.7.1") -> None:
        """Ask the client to try again later with a 4xx reply."""
        raise PolicyVerdict(_reply(code, status, text, "4"))


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

    @classmethod
    def empty(cls) -> PolicySet:
        return cls([])

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PolicySet:
        """Load every ``*.py`` in ``directory`` in file-name order, or raise PolicyLoadError.

        A missing directory is an empty policy set (the default location need not exist).
        """
        root = Path(directory)
        if not root.is_dir():
            if root.exists():
                raise PolicyLoadError(f"{root}: not a directory")
            return cls([], str(root))
        policies = [_load_file(path) for path in sorted(root.glob("*.py"))]
        return cls(policies, str(root))

    def run(self, phase: str, ctx: PolicyContext) -> None:
        """Call every policy's ``phase`` hook in order.

        A policy's verdict propagates unchanged; any other exception becomes PolicyFailure
        (451 4.3.0) with the traceback logged, so a bug in a policy never loses mail.
        """
        for policy in self.policies:
            hook = policy.hooks.get(phase)
            if hook is None:
                continue
            try:
                hook(ctx)
            except PolicyVerdict:
                raise
            except Exception:
                log.exception(
                    "policy raised", policy=policy.name, phase=phase, queue_id=ctx.queue_id
                )
                raise PolicyFailure(SmtpReply("451", "4.3.0", POLICY_FAILED_TEXT)) from None

    def describe(self) -> list[str]:
        return [f"{p.name}: {', '.join(p.hooks) or '(no hooks)'}" for p in self.policies]


def _load_file(path: Path) -> Policy:
    _check_permissions(path)
    global _load_generation
    with _load_lock:
        _load_generation += 1
        # A fresh module name per load: a reload never mutates modules the old set uses.
        module_name = f"smtpapi_policy_{_load_generation}_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PolicyLoadError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PolicyLoadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop(module_name, None)
    return Policy(path.name, str(path), _hooks(module, path))


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


def _check_permissions(path: Path) -> None:
    """Refuse code that someone other than its owner (or root) could have changed."""
    st = path.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PolicyLoadError(f"{path}: refused, writable by group or others (chmod go-w {path})")
    if st.st_uid not in (0, os.geteuid()):
        raise PolicyLoadError(f"{path}: refused, owned by uid {st.st_uid}, not root or us")
