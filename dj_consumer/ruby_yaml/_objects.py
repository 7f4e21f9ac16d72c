"""Collections by Psych tag (ToRuby#visit_Psych_Nodes_Mapping / _Sequence, plus delayed_job's
``!ruby/ActiveRecord:`` extension), mapped onto the value types of ``dj_consumer.ruby_values``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dj_consumer.errors import HandlerParseError
from dj_consumer.ruby_values import RubyObject, RubyRange, RubyRecord, RubySet, RubyStruct
from dj_consumer.ruby_yaml._scalars import ScalarError, is_string_tag

__all__ = ["SPECIAL_CLASSES", "build_mapping", "build_sequence", "hashable_key"]

_STRUCT = re.compile(r"^!ruby/struct:?(.*)$")
_OBJECT = re.compile(r"^!ruby/object:?(.*)$")
_RECORD = re.compile(r"^!ruby/(?:ActiveRecord|Mongoid|DataMapper):(.+)$")
_EXCEPTION = re.compile(r"^!ruby/exception:?(.*)$")
_MARSHALABLE = re.compile(r"^!ruby/marshalable:(.*)$")
_HASH_WITH_IVARS = re.compile(r"^!ruby/hash-with-ivars(?::.*)?$")

# Keys a Rails 3.x-4.1 record wrote beside `attributes` (a plain hash of raw column values).
_BARE_RECORD_KEYS = frozenset({"attributes", "new_record", "active_record_yaml_version"})


def hashable_key(key: Any) -> Any:
    """A dict key for a Ruby hash key: Ruby allows arrays and hashes as keys, Python does not."""
    if isinstance(key, list):
        return tuple(hashable_key(item) for item in key)
    if isinstance(key, dict):
        return tuple((hashable_key(k), hashable_key(v)) for k, v in key.items())
    if isinstance(key, RubySet):
        return frozenset(hashable_key(item) for item in key)
    return key


def build_sequence(tag: str | None, items: list[Any]) -> Any:
    """``!omap`` is a list of one-pair hashes; every other sequence (``!ruby/array:X``…) a list."""
    if tag in ("!omap", "tag:yaml.org,2002:omap"):
        result: dict[Any, Any] = {}
        for pair in items:
            if isinstance(pair, dict):
                result.update(pair)
        return result
    return items


def build_mapping(tag: str | None, mapping: dict[Any, Any], *, depth: int) -> Any:
    """The value of one mapping node whose children are built; ``depth`` 0 is the root."""
    if tag is None:
        return mapping
    if match := _OBJECT.match(tag):
        return _object(match.group(1) or "Object", mapping, top_level=depth == 0)
    if match := _STRUCT.match(tag):
        return RubyStruct(match.group(1) or "Struct", _ivars(mapping))
    if match := _RECORD.match(tag):
        return _tagged_record(match.group(0), match.group(1), mapping)
    return _tagged_mapping(tag, mapping)


def _tagged_mapping(tag: str, mapping: dict[Any, Any]) -> Any:
    if is_string_tag(tag):
        return mapping.get("str")
    if tag.startswith("!ruby/array:"):
        internal = mapping.get("internal")
        return internal if isinstance(internal, list) else []
    if tag == "!ruby/range":
        return RubyRange(mapping.get("begin"), mapping.get("end"), bool(mapping.get("excl")))
    if match := _EXCEPTION.match(tag):
        return RubyObject(match.group(1) or "Exception", _ivars(mapping))
    if tag in ("!set", "tag:yaml.org,2002:set", "!ruby/set"):
        return RubySet(mapping)
    if _HASH_WITH_IVARS.match(tag):
        elements = mapping.get("elements")
        return elements if isinstance(elements, dict) else {}
    if match := _MARSHALABLE.match(tag):
        return RubyObject(match.group(1), _ivars(mapping))
    # !ruby/hash:X, !map:X, !omap and unknown tags: Psych builds a Hash.
    return mapping


def _ivars(mapping: dict[Any, Any]) -> dict[str, Any]:
    # Instance variable names come without "@" (Psych strips it when it reads them back).
    return {str(key).removeprefix("@"): value for key, value in mapping.items()}


def _object(class_name: str, mapping: dict[Any, Any], *, top_level: bool) -> Any:
    special = _SPECIAL_OBJECTS.get(class_name)
    if special is not None:
        return special(mapping)
    columns = _record_columns(mapping)
    if columns is None and not top_level:
        # Rails 3.x-4.1's bare `attributes` hash looks like any object with an @attributes
        # hash: taken for a record only with an id (not trusted at all for the job object).
        bare = _bare_columns(mapping)
        columns = bare if bare is not None and bare.get("id") is not None else None
    if columns is not None:
        return _record(class_name, columns)
    return RubyObject(class_name, _ivars(mapping))


def _tagged_record(tag: str, class_name: str, mapping: dict[Any, Any]) -> RubyRecord:
    """delayed_job's ``!ruby/ActiveRecord:X`` (and Mongoid/DataMapper): psych_ext reads
    ``payload['attributes'][primary_key]`` and finds the record again; a mapping without an
    ``attributes`` hash (its indentation collapsed, say) raises NoMethodError there."""
    columns = _record_columns(mapping)
    attributes = mapping.get("attributes")
    if columns is None and type(attributes) is dict:
        columns = {str(k): v for k, v in attributes.items()}
    if columns is None:
        raise HandlerParseError(
            f"record {class_name} ({tag.split(':')[0]}) has no `attributes` hash: Ruby cannot "
            "load it either (its indentation may have been lost)")
    if tag.startswith("!ruby/ActiveRecord:"):
        return _record(class_name, columns)
    return RubyRecord(class_name, columns)


def _record(class_name: str, columns: dict[str, Any]) -> RubyRecord:
    """An ActiveRecord record, which delayed_job 4.1.9 reloads (``klass.unscoped.find(id)``)
    as it loads the handler: without its id that is ``find(nil)``, RecordNotFound, and the
    job fails to load. (The id is read from the ``id`` column, Rails' default primary key.)"""
    if columns.get("id") is None:
        raise HandlerParseError(
            f"record {class_name} without its id: Ruby's find(nil) fails to load it "
            "(RecordNotFound)")
    return RubyRecord(class_name, columns)


def _record_columns(mapping: dict[Any, Any]) -> dict[str, Any] | None:
    """The column values of an ActiveRecord record in the forms only a record has; None when
    ``mapping`` has none of them.

    Rails 5.2+: ``concise_attributes`` (a list of ActiveModel::Attribute); Rails 4.2-5.1:
    ``raw_attributes`` (plus an AttributeSet under ``attributes``).
    """
    concise = mapping.get("concise_attributes")
    if isinstance(concise, list):
        return _concise_columns(concise)
    raw = mapping.get("raw_attributes")
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    attributes = mapping.get("attributes")
    if isinstance(attributes, RubyObject) and attributes.ruby_class.endswith("AttributeSet"):
        return _attribute_set_columns(attributes)
    return None


def _bare_columns(mapping: dict[Any, Any]) -> dict[str, Any] | None:
    """Rails 3.x-4.1 and delayed_job's Syck-era ``!ruby/ActiveRecord:X``: ``attributes``, a
    plain hash of column values."""
    attributes = mapping.get("attributes")
    if type(attributes) is dict and set(mapping) <= _BARE_RECORD_KEYS:
        return {str(k): v for k, v in attributes.items()}
    return None


def _concise_columns(attributes: list[Any]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for attribute in attributes:
        if isinstance(attribute, dict) and "name" in attribute:
            columns[str(attribute["name"])] = _attribute_value(attribute)
    return columns


def _attribute_value(attribute: dict[str, Any]) -> Any:
    # FromDatabase/FromUser carry value_before_type_cast; WithCastValue only `value`.
    if "value_before_type_cast" in attribute:
        return attribute["value_before_type_cast"]
    return attribute.get("value")


def _attribute_set_columns(attribute_set: RubyObject) -> dict[str, Any]:
    """An AttributeSet's LazyAttributeHash (``values`` + materialized ``delegate_hash``)."""
    lazy = attribute_set.get("attributes")
    if not isinstance(lazy, dict):
        return {}
    values = lazy.get("values")
    columns = {str(k): v for k, v in values.items()} if isinstance(values, dict) else {}
    delegate = lazy.get("delegate_hash")
    if isinstance(delegate, dict):
        for name, attribute in delegate.items():
            if isinstance(attribute, dict):
                columns[str(name)] = _attribute_value(attribute)
    if not columns and all(isinstance(v, dict) for v in lazy.values()):
        # Rails 4.2 wrote the attributes hash itself: name → Attribute.
        for name, attribute in lazy.items():
            columns[str(name)] = _attribute_value(attribute)
    return columns


def _time_with_zone(mapping: dict[Any, Any]) -> datetime:
    utc = mapping.get("utc")
    if not isinstance(utc, datetime):
        raise ScalarError("ActiveSupport::TimeWithZone without a `utc` time")
    return utc.astimezone(_zone(mapping.get("zone")))


def _zone(zone: Any) -> tzinfo:
    name = zone.get("name") if isinstance(zone, dict) else None
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # no tz database entry: keep the instant, in UTC
    return UTC


def _duration(mapping: dict[Any, Any]) -> timedelta:
    value = mapping.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScalarError("ActiveSupport::Duration without a numeric `value`")
    return timedelta(seconds=value)


def _rational(mapping: dict[Any, Any]) -> Fraction:
    try:
        return Fraction(mapping.get("numerator", 0), mapping.get("denominator", 1))
    except (TypeError, ValueError, ZeroDivisionError):
        raise ScalarError("invalid Rational") from None


def _complex(mapping: dict[Any, Any]) -> complex:
    try:
        return complex(mapping.get("real", 0), mapping.get("image", 0))
    except (TypeError, ValueError):
        raise ScalarError("invalid Complex") from None


def _set(mapping: dict[Any, Any]) -> RubySet:
    # Ruby's Set (before it got its own YAML form) is dumped as its internal Hash of member → true.
    members = mapping.get("hash")
    return RubySet(members if isinstance(members, dict) else ())


def _hash(mapping: dict[Any, Any]) -> dict[Any, Any]:
    return mapping


_SPECIAL_OBJECTS: dict[str, Any] = {
    "ActiveSupport::TimeWithZone": _time_with_zone,
    "ActiveSupport::Duration": _duration,
    "Rational": _rational,
    "Complex": _complex,
    "Set": _set,
    "Hash": _hash,
}
# `!ruby/object:` classes that load as another value (and so under another class name).
SPECIAL_CLASSES = frozenset(_SPECIAL_OBJECTS)
