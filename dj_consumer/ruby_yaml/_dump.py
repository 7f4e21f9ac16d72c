"""Python values → handler YAML that Ruby's ``YAML.load_dj`` reads as the same values.

A small block-style emitter of our own, shaped like Psych's output: we need exact control
over the one thing generic emitters get wrong for Ruby, namely which strings must be quoted
so Psych's ScalarScanner does not turn them into numbers, times, booleans or Symbols.
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from dj_consumer.ruby_values import (
    RubyClass,
    RubyModule,
    RubyObject,
    RubyRange,
    RubyRecord,
    RubyRegexp,
    RubyStruct,
)
from dj_consumer.ruby_yaml._activejob import serialize_arguments
from dj_consumer.ruby_yaml._inspect import ruby_float
from dj_consumer.ruby_yaml._interpret import JOB_WRAPPER
from dj_consumer.ruby_yaml._scalars import tokenize

__all__ = ["SHAPES", "dump_handler"]

CONSTANT_PATH = r"[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*"
CLASS_NAME = re.compile(rf"\A{CONSTANT_PATH}\Z")  # a Ruby constant path: Billing::ChargeJob
_ATTRIBUTE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
# Also Ruby constant paths (Billing::ChargeJob), which Psych writes plain: a `:` that is not
# followed by a space or the end of the line starts nothing in YAML.
_PLAIN_SAFE = re.compile(rf"\A(?:[A-Za-z_][A-Za-z0-9_./@-]*|{CONSTANT_PATH})\Z")
SHAPES = ("object", "struct", "active_job")


def dump_handler(
    name: str,
    payload: Any,
    *,
    shape: str = "object",
    queue_name: str | None = None,
    priority: int | None = None,
) -> str:
    """The handler for job ``name`` with ``payload``.

    ``shape="object"`` / ``"struct"``: ``--- !ruby/object:Name`` / ``!ruby/struct:Name`` with
    the payload dict as attributes. ``shape="active_job"``: an ActiveJob JobWrapper for job
    class ``name``; ``payload`` is the argument list or a job_data dict (its ``arguments``
    are serialized the ActiveJob way; missing keys get ActiveJob's defaults).
    """
    if not CLASS_NAME.match(name):
        raise ValueError(f"not a Ruby class name: {name!r}")
    if shape == "active_job":
        job_data = _job_data(name, payload, queue_name=queue_name, priority=priority)
        return _document(RubyObject(JOB_WRAPPER, {"job_data": job_data}))
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    if not isinstance(payload, Mapping) or not all(isinstance(k, str) for k in payload):
        raise TypeError("an object or struct payload must be a dict with str keys")
    bad = [k for k in payload if not _ATTRIBUTE.match(k)]
    if bad:
        # Psych sets each key as an instance variable (`@key`): it must be a Ruby identifier.
        raise ValueError(f"attribute names must be Ruby identifiers, not {bad!r}")
    kind = RubyStruct if shape == "struct" else RubyObject
    return _document(kind(name, dict(payload)))


def _job_data(
    name: str, payload: Any, *, queue_name: str | None, priority: int | None
) -> dict[str, Any]:
    if isinstance(payload, Mapping):
        given = dict(payload)
        arguments = given.pop("arguments", [])
    else:
        given, arguments = {}, payload
    if not isinstance(arguments, (list, tuple)):
        raise TypeError("ActiveJob arguments must be a list")
    job_data: dict[str, Any] = {
        "job_class": name,
        "job_id": str(uuid.uuid4()),
        "provider_job_id": None,
        "queue_name": queue_name or "default",
        "priority": priority,
        "arguments": serialize_arguments(list(arguments)),
        "executions": 0,
        "exception_executions": {},
        "locale": "en",
        "timezone": "UTC",
        "enqueued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    job_data.update(given)
    job_data["job_class"] = name
    return job_data


def _document(root: RubyObject) -> str:
    lines = [f"--- {_tag(root)}"]
    if root:
        _mapping_body(lines, root, 0)
    else:
        lines[0] += " {}"
    return "\n".join(lines) + "\n"


def _tag(value: RubyObject) -> str:
    if not CLASS_NAME.match(value.ruby_class):
        raise ValueError(f"not a Ruby class name: {value.ruby_class!r}")
    kind = "struct" if isinstance(value, RubyStruct) else "object"
    return f"!ruby/{kind}:{value.ruby_class}"


def _mapping_body(lines: list[str], mapping: Mapping[Any, Any], indent: int) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        key_text = _key(key)
        if key_text is None:
            raise TypeError(f"cannot dump a {type(key).__name__} as a hash key")
        _entry(lines, f"{pad}{key_text}:", value, indent + 2)


def _key(key: Any) -> str | None:
    if key is None:
        return "~"  # an empty key would be no key at all
    if key == "<<":
        return "!!str <<"  # Psych merges any other `<<` key
    return _scalar(key)


def _sequence_body(lines: list[str], items: list[Any], indent: int) -> None:
    pad = " " * indent
    for item in items:
        _entry(lines, f"{pad}-", item, indent + 2)


def _entry(lines: list[str], head: str, value: Any, indent: int) -> None:
    """``head`` (``key:`` or ``-``) followed by ``value`` inline or as an indented block."""
    text = _scalar(value)
    if text is not None:
        lines.append(f"{head} {text}" if text else head)
        return
    tag, body = _collection(value)
    prefix = f"{head} {tag}" if tag else head
    if not body:
        lines.append(f"{prefix} {'[]' if isinstance(body, list) else '{}'}")
        return
    lines.append(prefix)
    if isinstance(body, list):
        _sequence_body(lines, body, indent)
    else:
        _mapping_body(lines, body, indent)


def _collection(value: Any) -> tuple[str, dict[Any, Any] | list[Any]]:
    """(tag, body) for a value written as a block mapping or sequence."""
    if isinstance(value, RubyRecord):
        return _tag(value), _concise_record(value)
    if isinstance(value, RubyObject):
        return _tag(value), dict(value)
    if isinstance(value, RubyRange):
        return "!ruby/range", {"begin": value.begin, "end": value.end, "excl": value.exclude_end}
    if isinstance(value, AbstractSet):
        return "!ruby/object:Set", {"hash": {_set_member(m): True for m in value}}
    if isinstance(value, Mapping):
        return "", dict(value)
    if isinstance(value, (list, tuple)):
        return "", list(value)
    raise TypeError(f"cannot dump a {type(value).__name__} for Ruby")


def _set_member(member: Any) -> Any:
    if _scalar(member) is None:
        raise TypeError("only scalar Set members can be dumped")
    return member


def _concise_record(record: RubyRecord) -> dict[str, Any]:
    # Rails 5.2+ `encode_with`: what Rails 6.1/7.x write and read.
    attributes = [
        RubyObject("ActiveModel::Attribute::FromDatabase", {"name": k, "value_before_type_cast": v})
        for k, v in record.items()
    ]
    return {"concise_attributes": attributes, "new_record": False, "active_record_yaml_version": 2}


def _scalar(value: Any) -> str | None:
    """The inline text of a scalar value, or None when ``value`` is a collection."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, RubyModule):
        return f"!ruby/module {_quoted(str(value))}"
    if isinstance(value, RubyClass):
        return f"!ruby/class {_quoted(str(value))}"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        return f"!ruby/object:BigDecimal {_big_decimal(value)}"
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"!binary {_quoted(base64.b64encode(bytes(value)).decode('ascii'))}"
    if isinstance(value, RubyRegexp):
        return f"!ruby/regexp {_quoted(f'/{value.source}/{value.options}')}"
    if isinstance(value, Fraction):
        return f"!ruby/object:Rational {value.numerator}/{value.denominator}"
    return None


def _string(text: str) -> str:
    # Plain only when Psych would read it back as this very string; else double-quoted.
    if _PLAIN_SAFE.match(text):
        read_back = tokenize(text)
        if isinstance(read_back, str) and read_back == text:
            return text
    return _quoted(text)


def _quoted(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif (
            0x20 <= code < 0x7F
            or (0xA0 <= code < 0xD800 and code not in (0x2028, 0x2029))
            or (0xE000 <= code <= 0xFFFD and code != 0xFEFF)
            or code >= 0x10000
        ):
            out.append(char)
        elif 0xD800 <= code < 0xE000:
            raise ValueError("cannot dump a string with a lone surrogate")
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        else:
            out.append(f"\\u{code:04X}")
    out.append('"')
    return "".join(out)


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return ruby_float(value)


def _big_decimal(value: Decimal) -> str:
    # BigDecimal#_dump is "<max precision>:<to_s>"; _load reads the part after the colon.
    if value.is_nan():
        return "9:NaN"
    if value.is_infinite():
        return "9:Infinity" if value > 0 else "9:-Infinity"
    text = format(value, "e") if abs(value.adjusted()) > 15 else format(value, "f")
    return f"{len(value.as_tuple().digits) + 9}:{text}"


def _time(value: datetime) -> str:
    """Psych's Time format: ``2024-01-02 03:04:05.123456000 +01:00`` (``Z`` for UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # naive times are UTC in this project
    offset = value.utcoffset()
    if offset is not None and timedelta(hours=-1) < offset < timedelta(0):
        # Psych reads "-00:30" as +00:30 (the sign rides on the hours); say the instant in UTC.
        value, offset = value.astimezone(UTC), timedelta(0)
    base = f"{value.year:04d}-{value:%m-%d %H:%M:%S.%f}000"  # %Y does not pad years < 1000
    if not offset:
        return f"{base} Z"
    seconds = int(offset.total_seconds())
    if seconds % 60:
        raise ValueError(f"Ruby reads UTC offsets in whole minutes, not {offset}")
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{base} {sign}{hours:02d}:{minutes:02d}"
