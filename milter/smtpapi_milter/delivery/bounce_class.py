"""SparkPost bounce classes for failed deliveries, decided by ordered rules kept in a data file.

A failed delivery comes with an enhanced status code (RFC 3463, e.g. ``5.1.1``; Postfix logs
it as ``dsn=``), the remote server's reply code (``550``) when a remote server answered, and a
text. Mailbox providers often hide the real reason in the text behind a generic code (Gmail's
``5.7.1 ... likely unsolicited mail``), so the rules look at all three.

Rules file format (TOML; the shipped ``bounce_rules.toml`` and an operator's file alike)::

    [[rule]]
    class = 51                          # a SparkPost bounce class, see BOUNCE_CLASSES
    enhanced = ["5.7.1", "5.7.x"]       # enhanced status patterns: x or * is any number
    code = "5xx"                        # reply code patterns: x is any digit
    text = 'likely unsolicited|spamhaus' # Python regex, searched case-insensitively
    note = "Gmail spam block"           # free text, ignored

A rule needs ``class`` and at least one of ``enhanced``, ``code``, ``text`` (each a string or a
list of strings; a list matches when any of its patterns does). A rule matches when every
condition it has matches; a pattern for ``enhanced`` or ``code`` never matches an absent value
(an absent enhanced code is first taken from the text, ``550 5.1.1 ...``, or from the reply
code's class, ``5.0.0``, as Postfix does). Texts are matched with the inner prefixes of a
multi-line reply (``550-5.7.1``) removed. Rules are tried in file order, the operator's file
before the shipped one; the first match wins; when none matches the class is 1 (undetermined).
A bad file is refused with a BounceRulesError naming the file, the rule's number and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .required_text import fold, required_literals

# SparkPost's bounce classes: number -> (name, category), as listed at
# https://support.sparkpost.com/docs/deliverability/bounce-classification-codes. The category
# is how SparkPost groups them: hard, soft, block, admin, undetermined.
BOUNCE_CLASSES: dict[int, tuple[str, str]] = {
    1: ("Undetermined", "undetermined"),
    10: ("Invalid Recipient", "hard"),
    20: ("Soft Bounce", "soft"),
    21: ("DNS Failure", "soft"),
    22: ("Mailbox Full", "soft"),
    23: ("Too Large", "soft"),
    24: ("Timeout", "soft"),
    25: ("Admin Failure", "admin"),
    30: ("Generic Bounce: No RCPT", "hard"),
    40: ("Generic Bounce", "soft"),
    50: ("Mail Block", "block"),
    51: ("Spam Block", "block"),
    52: ("Spam Content", "block"),
    53: ("Prohibited Attachment", "block"),
    54: ("Relaying Denied", "block"),
    60: ("Auto-Reply", "soft"),
    70: ("Transient Failure", "soft"),
    80: ("Subscribe", "admin"),
    90: ("Unsubscribe", "hard"),
    100: ("Challenge-Response", "soft"),
}
UNDETERMINED = 1

SHIPPED_RULES = "bounce_rules.toml"


class BounceRulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the key."""


def bounce_category(bounce_class: int) -> str:
    """hard, soft, block, admin or undetermined: how SparkPost groups the classes."""
    return BOUNCE_CLASSES.get(bounce_class, BOUNCE_CLASSES[UNDETERMINED])[1]


@dataclass(frozen=True, slots=True)
class _Text:
    """One text pattern of a rule, with the literals one of which any match contains (folded;
    None when they cannot be told): most patterns are skipped by a substring test."""

    regex: re.Pattern[str]
    literals: tuple[str, ...] | None

    def search(self, text: str, folded: str) -> bool:
        literals = self.literals
        if literals is not None and not any(map(folded.__contains__, literals)):
            return False
        return self.regex.search(text) is not None


@dataclass(frozen=True, slots=True)
class _Rule:
    bounce_class: int
    # Each pattern is a tuple of parts, None standing for "any"; empty tuple: no condition.
    enhanced: tuple[tuple[str | None, str | None, str | None], ...]
    code: tuple[tuple[str | None, str | None, str | None], ...]
    texts: tuple[_Text, ...]
    # Every literal of the text patterns when each pattern has some: none of them in the text
    # rules the rule out in one pass of C (any over map), without a Python step per pattern.
    literals: tuple[str, ...] | None = None

    def matches(
        self, enhanced: tuple[str, str, str] | None, code: str | None, text: str, folded: str
    ) -> bool:
        if self.enhanced and (enhanced is None or not _any_match(self.enhanced, enhanced)):
            return False
        if self.code and (code is None or not _any_match(self.code, code)):
            return False
        if not self.texts:
            return True
        if self.literals is not None and not any(map(folded.__contains__, self.literals)):
            return False
        for pattern in self.texts:  # noqa: SIM110 - a loop: any() adds a generator per call
            if pattern.search(text, folded):
                return True
        return False


def _any_match(patterns, value) -> bool:
    for pattern in patterns:
        if all(p is None or p == v for p, v in zip(pattern, value, strict=True)):
            return True
    return False


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_ENHANCED_PATTERN = re.compile(r"([245x*])\.(\d{1,3}|[x*])\.(\d{1,3}|[x*])", re.IGNORECASE)
_CODE_PATTERN = re.compile(r"[245x][0-9x][0-9x]", re.IGNORECASE)


def _wild(part: str) -> str | None:
    return None if part.lower() in ("x", "*") else str(int(part))


class BounceClassifier:
    """Ordered rules compiled once; ``classify`` runs per log line, so it does little work and
    remembers its recent answers (the same reply comes back for many recipients)."""

    CACHE_SIZE = 4096

    def __init__(self, rules: list[_Rule]) -> None:
        self._rules = tuple(rules)
        self._cache: dict[tuple[str | None, int | None, str], int] = {}

    @classmethod
    def load(cls, extra: str | Path | None = None) -> BounceClassifier:
        """The shipped rules, after an operator's rules file (``extra``) when given."""
        rules: list[_Rule] = []
        if extra is not None:
            path = Path(extra)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise BounceRulesError(f"{path}: cannot read bounce rules: {exc.strerror}") from exc
            rules += _parse(raw, str(path))
        shipped = resources.files(__package__).joinpath(SHIPPED_RULES)
        rules += _parse(shipped.read_bytes(), str(shipped))
        return cls(rules)

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    def classify(self, enhanced: str | None, code: int | None, text: str) -> int:
        """The SparkPost bounce class of a failure: enhanced status code (``5.1.1`` or None),
        reply code (550 or None) and the text; 1 (undetermined) when no rule matches.

        Mail addresses in the text count as ``<address>``: rules see the reason, not the
        recipient (SparkPost's ``reason`` leaves the address out too).

        A missing enhanced code or reply code is taken from the text when it starts with one
        (``550 5.1.1 ...``, qmail's ``(#5.1.1)``); a missing enhanced code otherwise follows
        the reply code's class (``5.0.0``), as Postfix's own ``dsn=`` does."""
        if "@" in text:  # the same reply for every recipient: one cache entry, not one each
            text = _ADDRESS.sub("<address>", text)
        key = (enhanced, code, text)
        found = self._cache.get(key)
        if found is None:
            found = self._classify(enhanced, code, text)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()  # cheaper than LRU bookkeeping; refills with what is common
            self._cache[key] = found
        return found

    def _classify(self, enhanced: str | None, code: int | None, text: str) -> int:
        text = text if isinstance(text, str) else ""
        if _CONTINUATION.search(text):
            text = _CONTINUATION.sub(" ", text)
        if code is None or not enhanced:
            leading = _LEADING_REPLY.match(text)
            if leading is not None:
                if code is None:
                    code = int(leading[1])
                enhanced = enhanced or leading[2]
        if not enhanced:
            qmail = _QMAIL_STATUS.search(text)
            if qmail is not None:
                enhanced = qmail[1]
        parsed = _ENHANCED.fullmatch(enhanced.strip()) if isinstance(enhanced, str) else None
        code_text = str(code) if type(code) is int and 200 <= code <= 599 else None
        if parsed is not None:
            enhanced_parts = (parsed[1], str(int(parsed[2])), str(int(parsed[3])))
        elif code_text is not None and code_text[0] in "45":
            enhanced_parts = (code_text[0], "0", "0")
        else:
            enhanced_parts = None
        folded = fold(text)
        for rule in self._rules:
            if rule.matches(enhanced_parts, code_text, text, folded):
                return rule.bounce_class
        return UNDETERMINED


# Inner lines of a multi-line reply as Postfix logs them ("... is 550-5.7.1 likely
# unsolicited ..."): removed so that a phrase split across lines still matches.
_CONTINUATION = re.compile(r"(?<=\S)\s+[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?=\S)")
_LEADING_REPLY = re.compile(r"\s*([245]\d\d)(?![\d.])(?:[- ]+#?([245]\.\d{1,3}\.\d{1,3})\b)?")
_ADDRESS = re.compile(r"<?[^\s<>()\[\]{}\"',;:@]+@[\w.-]+>?")
_QMAIL_STATUS = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")

# Postfix's delivery agents log a remote server's refusal as
# "host mx.example[192.0.2.1] said: 550 5.1.1 <a@b.example>: ... (in reply to RCPT TO command)",
# or, when the greeting is a refusal, "host mx.example[192.0.2.1] refused to talk to me: 554 ...".
_SAID = (" said: ", " refused to talk to me: ")
_REPLY_START = re.compile(r"\s*([245]\d\d)(?![\d.])[- ]?(?:([245]\.\d{1,3}\.\d{1,3})\b)?\s*")
_IN_REPLY_TO = " (in reply to "


def parse_postfix_reason(text: str) -> tuple[int | None, str | None, str]:
    """Reply code, enhanced status code and reply text of the reason Postfix puts in
    parentheses after ``status=``: ``host X said: 550 5.1.1 <a@b>: User unknown (in reply to
    RCPT TO command)`` gives ``(550, "5.1.1", "<a@b>: User unknown")``. A reason of Postfix's
    own (``connect to ...: Connection timed out``) gives ``(None, None, text)``."""
    reply = None
    for marker in _SAID:
        said = text.find(marker)
        if said >= 0:
            reply = _REPLY_START.match(text, said + len(marker))
            break
    if reply is None:
        return None, None, text.strip()
    rest = text[reply.end() :].rstrip()
    command = rest.rfind(_IN_REPLY_TO)
    if command >= 0 and rest.endswith(")"):
        rest = rest[:command]
    if _CONTINUATION.search(rest):
        rest = _CONTINUATION.sub(" ", rest)
    return int(reply[1]), reply[2], rest.strip()


def _parse(raw: bytes, where: str) -> list[_Rule]:
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BounceRulesError(f"{where}: not a TOML file: {exc}") from exc
    unknown = set(table) - {"rule"}
    if unknown:
        raise BounceRulesError(f"{where}: unknown key {sorted(unknown)[0]!r}: only [[rule]] tables")
    entries = table.get("rule", [])
    if not isinstance(entries, list):
        raise BounceRulesError(f"{where}: 'rule' must be an array of tables ([[rule]])")
    return [_rule(entry, f"{where}: rule {number}") for number, entry in enumerate(entries, 1)]


def _rule(entry: dict, where: str) -> _Rule:
    unknown = set(entry) - {"class", "enhanced", "code", "text", "note"}
    if unknown:
        raise BounceRulesError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    bounce_class = entry.get("class")
    if type(bounce_class) is not int or bounce_class not in BOUNCE_CLASSES:
        raise BounceRulesError(
            f"{where}: class = {bounce_class!r} is not a SparkPost bounce class "
            f"({', '.join(map(str, BOUNCE_CLASSES))})"
        )
    if not {"enhanced", "code", "text"} & set(entry):
        raise BounceRulesError(f"{where}: needs at least one of enhanced, code, text")
    enhanced = tuple(
        tuple(_wild(p) for p in _pattern(value, _ENHANCED_PATTERN, where, "enhanced").groups())
        for value in _strings(entry, "enhanced", where)
    )
    code = tuple(
        tuple(None if c in "xX" else c for c in _pattern(value, _CODE_PATTERN, where, "code")[0])
        for value in _strings(entry, "code", where)
    )
    texts = []
    for pattern in _strings(entry, "text", where):
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise BounceRulesError(f"{where}: text {pattern!r} is not a regex: {exc}") from exc
        texts.append(_Text(regex, required_literals(pattern)))
    literals = None
    if texts and all(text.literals is not None for text in texts):
        literals = tuple(dict.fromkeys(lit for text in texts for lit in text.literals or ()))
    return _Rule(bounce_class, enhanced, code, tuple(texts), literals)


def _strings(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise BounceRulesError(f"{where}: {key} = {value!r} must be a string or list of strings")
    return values


def _pattern(value: str, shape: re.Pattern[str], where: str, key: str) -> re.Match[str]:
    match = shape.fullmatch(value.strip())
    if match is None:
        example = "5.1.1 or 5.7.x" if key == "enhanced" else "550 or 5xx"
        raise BounceRulesError(f"{where}: {key} = {value!r} is not a pattern like {example}")
    return match
