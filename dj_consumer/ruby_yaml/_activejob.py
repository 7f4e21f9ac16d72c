"""ActiveJob argument (de)serialization, as ActiveJob::Arguments (Rails 5-7) does it.

Arguments travel as JSON-like data with markers: ``_aj_symbol_keys`` / ``_aj_ruby2_keywords``
/ ``_aj_hash_with_indifferent_access`` on hashes, ``{"_aj_globalid": uri}`` for records, and
``{"_aj_serialized": "ActiveJob::Serializers::XSerializer", ...}`` for other objects.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dj_consumer.ruby_values import RubyClass, RubyGlobalID, RubyRange
from dj_consumer.ruby_yaml._scalars import ScalarError

__all__ = ["deserialize_arguments", "serialize_arguments"]

GLOBALID = "_aj_globalid"
SERIALIZED = "_aj_serialized"
SYMBOL_KEYS = "_aj_symbol_keys"
RUBY2_KEYWORDS = "_aj_ruby2_keywords"
INDIFFERENT = "_aj_hash_with_indifferent_access"
_MARKERS = (SYMBOL_KEYS, RUBY2_KEYWORDS, INDIFFERENT)
_SERIALIZERS_NS = "ActiveJob::Serializers::"


def deserialize_arguments(arguments: Any) -> list[Any]:
    """The job's arguments as plain Python values (symbol keys and markers are dropped)."""
    if not isinstance(arguments, list):
        raise ScalarError("ActiveJob job_data['arguments'] is not an array")
    return [_deserialize(argument) for argument in arguments]


def _deserialize(argument: Any) -> Any:
    if isinstance(argument, list):
        return [_deserialize(item) for item in argument]
    if not isinstance(argument, dict):
        return argument
    if len(argument) == 1 and GLOBALID in argument:
        return RubyGlobalID(str(argument[GLOBALID]))
    if SERIALIZED in argument:
        return _deserialize_object(argument)
    return {key: _deserialize(value) for key, value in argument.items() if key not in _MARKERS}


def _deserialize_object(hash_: dict[Any, Any]) -> Any:
    name = str(hash_[SERIALIZED]).removeprefix(_SERIALIZERS_NS)
    reader = _READERS.get(name)
    if reader is None:
        # An app's own serializer: we cannot know its type; hand over its data as it is.
        return {key: _deserialize(value) for key, value in hash_.items()}
    try:
        return reader(hash_)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise ScalarError(f"invalid ActiveJob argument {name}: {exc}") from None


def _iso_time(hash_: dict[Any, Any]) -> datetime:
    value = datetime.fromisoformat(str(hash_["value"]))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    zone = hash_.get("time_zone")  # Rails 7.1+ TimeWithZoneSerializer
    if isinstance(zone, str):
        try:
            return value.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a Rails zone name ("Eastern Time (US & Canada)"): the offset stands
    return value


def _duration(hash_: dict[Any, Any]) -> timedelta:
    return timedelta(seconds=float(hash_["value"]))


def _range(hash_: dict[Any, Any]) -> RubyRange:
    return RubyRange(
        _deserialize(hash_.get("begin")),
        _deserialize(hash_.get("end")),
        bool(hash_.get("exclude_end")),
    )


_READERS: dict[str, Callable[[dict[Any, Any]], Any]] = {
    "SymbolSerializer": lambda h: str(h["value"]),
    "DateSerializer": lambda h: date.fromisoformat(str(h["value"])),
    "TimeSerializer": _iso_time,
    "DateTimeSerializer": _iso_time,
    "TimeWithZoneSerializer": _iso_time,
    "DurationSerializer": _duration,
    "BigDecimalSerializer": lambda h: Decimal(str(h["value"])),
    "ModuleSerializer": lambda h: RubyClass(str(h["value"])),
    "RangeSerializer": _range,
}


def serialize_arguments(arguments: list[Any]) -> list[Any]:
    """Python values → what ActiveJob::Arguments.serialize would have written for them."""
    return [_serialize(argument) for argument in arguments]


def _serialize(argument: Any) -> Any:
    if argument is None or isinstance(argument, (bool, int, float, str)):
        if isinstance(argument, RubyGlobalID):
            return {GLOBALID: str(argument)}
        if isinstance(argument, RubyClass):
            return _object("ModuleSerializer", value=str(argument))
        return argument
    if isinstance(argument, Decimal):
        return argument  # a permitted type in Rails 6.1: written as !ruby/object:BigDecimal
    if isinstance(argument, (list, tuple)):
        return [_serialize(item) for item in argument]
    if isinstance(argument, dict):
        return _serialize_hash(argument)
    return _serialize_value(argument)


def _serialize_hash(argument: dict[Any, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in argument.items():
        if not isinstance(key, str) or key in (GLOBALID, SERIALIZED, *_MARKERS):
            raise TypeError(f"ActiveJob hash keys must be strings and not reserved: {key!r}")
        result[key] = _serialize(value)
    result[SYMBOL_KEYS] = []  # Python keys are strings: no key becomes a Symbol
    return result


def _serialize_value(argument: Any) -> dict[str, Any]:
    if isinstance(argument, datetime):
        if argument.tzinfo is None:
            argument = argument.replace(tzinfo=UTC)  # naive times are UTC here
        return _object("TimeSerializer", value=_iso8601_nanos(argument))
    if isinstance(argument, date):
        return _object("DateSerializer", value=argument.isoformat())
    if isinstance(argument, timedelta):
        seconds = argument.total_seconds()
        whole: int | float = int(seconds) if seconds == int(seconds) else seconds
        parts = [[_object("SymbolSerializer", value="seconds"), whole]]
        return _object("DurationSerializer", value=whole, parts=parts)
    raise TypeError(f"cannot pass {type(argument).__name__} as an ActiveJob argument")


def _iso8601_nanos(moment: datetime) -> str:
    # Time#iso8601(9): nine fraction digits, "Z" for UTC.
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000"
    offset = moment.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return text + zone


def _object(serializer: str, **values: Any) -> dict[str, Any]:
    return {SERIALIZED: _SERIALIZERS_NS + serializer, **values}
