"""Python values → handler YAML that Ruby's ``YAML.load_dj`` reads as the same values.

Values become the nodes Psych's YAMLTree would build for the same Ruby values; _emit writes
them as Psych and libyaml do, so the handler is the very text Rails would have written.
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
from dj_consumer.ruby_yaml._emit import (
    LITERAL,
    SINGLE,
    Collection,
    Node,
    Scalar,
    dump_document,
    string,
)
from dj_consumer.ruby_yaml._inspect import ruby_float
from dj_consumer.ruby_yaml._interpret import JOB_WRAPPER
from dj_consumer.ruby_yaml._scalars import tokenize

__all__ = ["SHAPES", "dump_handler"]

CONSTANT_PATH = r"[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*"
CLASS_NAME = re.compile(rf"\A{CONSTANT_PATH}\Z")  # a Ruby constant path: Billing::ChargeJob
_ATTRIBUTE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
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
    node = _node(root)
    assert isinstance(node, Collection)
    return dump_document(node)


def _tag(value: RubyObject) -> str:
    if not CLASS_NAME.match(value.ruby_class):
        raise ValueError(f"not a Ruby class name: {value.ruby_class!r}")
    kind = "struct" if isinstance(value, RubyStruct) else "object"
    return f"!ruby/{kind}:{value.ruby_class}"


def _node(value: Any) -> Node:
    """The node Psych's YAMLTree builds for `value` (as the Ruby value it stands for)."""
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if isinstance(value, RubyRecord):
        return _mapping(_concise_record(value), _tag(value))
    if isinstance(value, RubyObject):
        return _mapping(value, _tag(value), attributes=True)
    if isinstance(value, RubyRange):
        return _mapping({"begin": value.begin, "end": value.end, "excl": value.exclude_end},
                        "!ruby/range")
    if isinstance(value, Fraction):  # visit_Rational: plain-only strings
        return Collection([(Scalar("denominator"), Scalar(str(value.denominator))),
                           (Scalar("numerator"), Scalar(str(value.numerator)))],
                          mapping=True, tag="!ruby/object:Rational")
    if isinstance(value, AbstractSet):
        return _mapping({"hash": {_set_member(m): True for m in value}}, "!ruby/object:Set")
    if isinstance(value, Mapping):
        return _mapping(value, None)
    if isinstance(value, (list, tuple)):
        return Collection([_node(item) for item in value], mapping=False)
    raise TypeError(f"cannot dump a {type(value).__name__} for Ruby")


def _mapping(mapping: Mapping[Any, Any], tag: str | None, *, attributes: bool = False) -> Collection:
    """A Hash, or (`attributes`) an object's instance variables / a Struct's members, whose
    names Psych writes as plain-only scalars (dump_ivars), not through visit_String."""
    pairs = []
    for key, value in mapping.items():
        key_node: Scalar | None
        if attributes and isinstance(key, str):
            if tokenize(key) != key:
                # Psych writes the name plain, and reads it back as true/false/nil: Ruby
                # itself would set @true instead of @on. Refuse rather than write that.
                raise ValueError(f"attribute {key!r} would be read back by Ruby as "
                                 f"{tokenize(key)!r}: rename it")
            key_node = Scalar(key)
        else:
            key_node = _scalar(key)
        if key_node is None:
            raise TypeError(f"cannot dump a {type(key).__name__} as a hash key")
        pairs.append((key_node, _node(value)))
    return Collection(pairs, mapping=True, tag=tag)


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


def _scalar(value: Any) -> Scalar | None:
    """The scalar node of ``value`` as Psych's visit_* methods make it, or None for a
    collection (plain_implicit / quoted_implicit and the style are Psych's arguments)."""
    if value is None:
        return Scalar("")
    if value is True or value is False:
        return Scalar("true" if value else "false")
    if isinstance(value, RubyModule):
        return Scalar(str(value), "!ruby/module", False, False, SINGLE)
    if isinstance(value, RubyClass):
        return Scalar(str(value), "!ruby/class", False, False, SINGLE)
    if isinstance(value, str):
        if any(0xD800 <= ord(c) < 0xE000 for c in value):
            raise ValueError("cannot dump a string with a lone surrogate")
        return string(value)
    if isinstance(value, int):
        return Scalar(str(value))
    if isinstance(value, float):
        return Scalar(_float(value))
    if isinstance(value, Decimal):
        return Scalar(_big_decimal(value), "!ruby/object:BigDecimal", False, False)
    if isinstance(value, datetime):
        return Scalar(_time(value))
    if isinstance(value, date):
        return Scalar(value.isoformat())
    if isinstance(value, (bytes, bytearray)):
        return Scalar(base64.b64encode(bytes(value)).decode("ascii"), "!binary", False, False,
                      LITERAL)
    if isinstance(value, RubyRegexp):
        return Scalar(f"/{value.source}/{value.options}", "!ruby/regexp", False, False)
    return None


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
