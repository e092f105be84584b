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
condition it has matches; a pattern for ``enhanced`` or ``code`` never matches an absent value.
Rules are tried in file order, the operator's file before the shipped one; the first match
wins; when none matches the class is 1 (undetermined).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# SparkPost's bounce classes: number -> (name, category). The category is how SparkPost's own
# reports group them: hard, soft, block, admin, undetermined.
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
class _Rule:
    bounce_class: int
    # Each pattern is a tuple of parts, None standing for "any"; empty tuple: no condition.
    enhanced: tuple[tuple[str | None, str | None, str | None], ...]
    code: tuple[tuple[str | None, str | None, str | None], ...]
    text: re.Pattern[str] | None

    def matches(self, enhanced: tuple[str, str, str] | None, code: str | None, text: str) -> bool:
        if self.enhanced and (enhanced is None or not _any_match(self.enhanced, enhanced)):
            return False
        if self.code and (code is None or not _any_match(self.code, code)):
            return False
        return self.text is None or self.text.search(text) is not None


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
    """Ordered rules compiled once; ``classify`` runs per log line, so it does little work."""

    def __init__(self, rules: list[_Rule]) -> None:
        self._rules = tuple(rules)

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
        reply code (550 or None) and the text; 1 (undetermined) when no rule matches."""
        parsed = _ENHANCED.fullmatch(enhanced.strip()) if enhanced else None
        enhanced_parts = (parsed[1], str(int(parsed[2])), str(int(parsed[3]))) if parsed else None
        code_text = str(code) if code is not None and 200 <= code <= 599 else None
        text = text or ""
        for rule in self._rules:
            if rule.matches(enhanced_parts, code_text, text):
                return rule.bounce_class
        return UNDETERMINED


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
    texts = _strings(entry, "text", where)
    text = None
    if texts:
        try:
            text = re.compile("|".join(f"(?:{t})" for t in texts), re.IGNORECASE)
        except re.error as exc:
            raise BounceRulesError(f"{where}: text = {texts!r} is not a regex: {exc}") from exc
    return _Rule(bounce_class, enhanced, code, text)


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
