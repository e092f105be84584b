"""The X-MSYS-API header: unfold, decode, parse and validate (SPEC 2, seeds 000/001).

Momentum's documented behaviour is reproduced exactly where senders depend on it: a folded
value is unfolded by turning each line break and the whitespace after it into one space
(``"my_awes\\n   ome_campaign"`` reads ``"my_awes ome_campaign"``), RFC 2047 encoded-words are
decoded before the JSON is parsed, and type errors are answered with Momentum's wording
(``X-MSYS-API 'metadata' must be of type 'json object'``).
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .replies import invalid

if TYPE_CHECKING:
    import jsonschema

HEADER_NAME = "X-MSYS-API"

_FOLD = re.compile(rb"\r?\n[ \t]*|\r[ \t]*")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
# Whitespace between two adjacent encoded-words is not part of the text (RFC 2047 6.2).
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(?==\?[^?\s]+\?[bBqQ]\?)")

# JSON Schema type names as Momentum words them in its replies.
_TYPE_WORDS = {
    "object": "json object",
    "array": "json array",
    "string": "string",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class XMsysApi:
    """The validated header. ``None`` means the sender did not set the field."""

    campaign_id: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    open_tracking: bool | None = None
    click_tracking: bool | None = None
    transactional: bool | None = None
    skip_suppression: bool | None = None
    # Which parts' links a click-tracked copy tracks. X-MSYS-API cannot say; only another
    # vendor's header can (vendor_headers/: Mailgun's htmlonly, Postmark's HtmlOnly/TextOnly,
    # SendGrid's enable_text). None: the configuration decides (click_tracking_text).
    click_tracking_html: bool | None = None
    click_tracking_text: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def unfold(value: bytes) -> bytes:
    """Join a folded header value the way Momentum does: each break plus indent is one space."""
    return _FOLD.sub(b" ", value).strip(b" \t")


def decode_value(value: bytes, name: str = HEADER_NAME) -> str:
    """Unfold, check the charset and decode RFC 2047 encoded-words into text.

    ``name`` is the header the replies name (the vendor headers are decoded the same way).
    """
    unfolded = unfold(value)
    try:
        text = unfolded.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(
            f"{name} header must be ASCII (use \\u escapes or RFC 2047) or UTF-8"
        ) from None
    if "=?" in text:
        text = _decode_encoded_words(text, name)
    return text


def _decode_encoded_words(text: str, name: str) -> str:
    text = _BETWEEN_WORDS.sub(r"\1", text)
    return _ENCODED_WORD.sub(lambda match: _decode_word(match, name), text)


def is_text_charset(name: str) -> bool:
    """Whether ``name`` is a codec that turns bytes into text.

    ``codecs.lookup`` alone also finds bytes-to-bytes codecs (zlib, rot13, base64), which
    ``bytes.decode`` then refuses with LookupError, and raises ValueError for a NUL in the name.
    (The probe encodes: ``b"".decode`` returns "" without even looking the codec up.) A name
    outside ASCII is none (RFC 2978), though Python drops its non-ASCII letters: "utfÿ" is
    UTF-8 to ``codecs``.
    """
    if not name.isascii():
        return False
    try:
        "".encode(name)
    except (LookupError, ValueError):
        return False
    return True


def _decode_word(match: re.Match[str], name: str) -> str:
    charset, encoding, payload = match.groups()
    # Replies quote the sender's charset with ascii(): it may hold control or 8-bit characters.
    if not is_text_charset(charset):
        raise invalid(f"{name} encoded-word has unknown charset {ascii(charset)[:40]}")
    try:
        raw = payload.encode("ascii")
        if encoding in "bB":
            data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
        else:
            data = binascii.a2b_qp(raw, header=True)
        return data.decode(charset)
    except (UnicodeError, binascii.Error, ValueError):
        raise invalid(f"{name} encoded-word is not valid {ascii(charset)[:40]}") from None


@cache
def _schema() -> dict[str, Any]:
    schema_text = resources.files(__package__).joinpath("schemas/x-msys-api.schema.json")
    return json.loads(schema_text.read_text("utf-8"))


@cache
def _validator() -> jsonschema.protocols.Validator:
    # Imported on the first header the plain check below cannot pass: jsonschema and what
    # it loads cost a process about 60 ms to import, more than all of `rewrite`'s own code.
    import jsonschema

    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse(value: bytes | str) -> XMsysApi:
    """Parse one X-MSYS-API header value (raw bytes as the MTA delivered it, folds included).

    Raises :class:`~smtpapi_milter.replies.SmtpReplyError` (550 5.6.0) with the documented
    text when the value cannot be used.
    """
    text = decode_value(value.encode("utf-8") if isinstance(value, str) else value)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise invalid(f"X-MSYS-API is not valid JSON: {reason}"[:200]) from None
    if not isinstance(data, dict):
        raise invalid("X-MSYS-API must be of type 'json object'")
    if len(text) > _REMEMBERED_TEXT or not _valid_text(text):
        _validate(data)
    options = data.get("options") or {}
    return XMsysApi(
        campaign_id=data.get("campaign_id"),
        metadata=data.get("metadata"),
        tags=data.get("tags"),
        open_tracking=options.get("open_tracking"),
        click_tracking=options.get("click_tracking"),
        transactional=options.get("transactional"),
        skip_suppression=options.get("skip_suppression"),
        raw=data,
    )


# A campaign's header is the same in every message: the schema check of a text that passed
# is remembered (texts up to this many characters, the last few hundred of them).
_REMEMBERED_TEXT = 4096


@lru_cache(maxsize=256)
def _valid_text(text: str) -> bool:
    """Whether ``text`` (a JSON object's text) passes the schema; only a pass is kept."""
    _validate(json.loads(text, parse_constant=_reject_constant))
    return True


# JSON Schema's types for what json.loads returns (bool is no integer or number there).
_JSON_TYPES: dict[str, Any] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) in (int, float),
}
# Keywords that only describe, and those plainly_valid applies; any other: jsonschema decides.
_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description"})
_PLAIN_KEYWORDS = frozenset({"type", "properties", "items"}) | _ANNOTATIONS


def plainly_valid(schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` passes ``schema`` as far as single "type", "properties" and "items"
    tell; False also when the schema uses anything else (jsonschema then decides).

    Never True where jsonschema says invalid (tests/test_xmsysapi_plain_check.py): it only
    spares the common, valid header the import of jsonschema."""
    if type(schema) is not dict or not _PLAIN_KEYWORDS.issuperset(schema):
        return False
    kind = schema.get("type")
    if kind is not None and not (type(kind) is str and _JSON_TYPES.get(kind, _no)(value)):
        return False
    properties = schema.get("properties")
    if properties is not None and type(value) is dict:
        for name, subschema in properties.items():
            if name in value and not plainly_valid(subschema, value[name]):
                return False
    items = schema.get("items")
    if items is not None and type(value) is list:
        return type(items) is dict and all(plainly_valid(items, item) for item in value)
    return True


def _no(value: Any) -> bool:
    return False


def _validate(data: dict[str, Any]) -> None:
    if plainly_valid(_schema(), data):
        return
    validator = _validator()
    if validator.is_valid(data):
        return
    error = min(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    path = list(error.absolute_path)
    if error.validator == "type":
        if path and isinstance(path[-1], int):
            name = ".".join(str(p) for p in path[:-1])
            word = _TYPE_WORDS.get(error.validator_value, error.validator_value)
            raise invalid(f"X-MSYS-API '{name}' elements must be of type '{word}'")
        name = ".".join(str(p) for p in path)
        word = _TYPE_WORDS.get(error.validator_value, error.validator_value)
        raise invalid(f"X-MSYS-API '{name}' must be of type '{word}'")
    raise invalid(f"X-MSYS-API is invalid: {error.message}"[:200])
