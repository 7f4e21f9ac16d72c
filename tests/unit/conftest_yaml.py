"""Helpers for the ruby_yaml tests: the Ruby-made fixture corpus, the type-tagged JSON it uses
for expected payloads (written by tests/fixtures/ruby_env.rb), and a strict comparison.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from dj_consumer.ruby_values import (
    RubyClass,
    RubyGlobalID,
    RubyModule,
    RubyObject,
    RubyRange,
    RubyRecord,
    RubyRegexp,
    RubySet,
    RubyStruct,
)
from dj_consumer.ruby_yaml._objects import hashable_key

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HANDLERS = FIXTURES / "handlers"

# Strings YAML could misread as another type, or that need quoting/escaping to survive.
TRICKY_STRINGS = [
    "yes",
    "1:20",
    "",
    " x",
    "a: b",
    "héllo 🎉",
    "line\nbreak",
    ":sym",
    "~",
    "1e5",
    "\x00\x7f\u2028",
    "<<",
]


@dataclass(frozen=True)
class Fixture:
    slug: str
    handler: str
    name: str
    display_name: str
    payload: Any  # decoded: the Python value load() must return
    source: str


def fixtures() -> list[Fixture]:
    found = []
    for path in sorted(HANDLERS.glob("*.yml")):
        expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
        found.append(
            Fixture(
                slug=path.stem,
                handler=path.read_bytes().decode("utf-8"),
                name=expected["name"],
                display_name=expected["display_name"],
                payload=decode(expected["payload"]),
                source=expected["source"],
            )
        )
    return found


def decode(value: Any) -> Any:
    """Tagged JSON → the Python value SPEC §3 maps the Ruby value to."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    tags = [key for key in value if key.startswith("$")]
    if not tags:
        return {key: decode(item) for key, item in value.items()}
    return _DECODERS[tags[0]](value)


def _hash(value: dict[str, Any]) -> dict[Any, Any]:
    return {hashable_key(decode(k)): decode(v) for k, v in value["$hash"]}


def _float(value: dict[str, Any]) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value["$float"]]


def _range(value: dict[str, Any]) -> RubyRange:
    begin, end, exclude = value["$range"]
    return RubyRange(decode(begin), decode(end), exclude)


_DECODERS: dict[str, Any] = {
    "$hash": _hash,
    "$float": _float,
    "$bytes": lambda v: base64.b64decode(v["$bytes"]),
    "$decimal": lambda v: Decimal(v["$decimal"]),
    "$time": lambda v: datetime.fromisoformat(v["$time"]),
    "$date": lambda v: date.fromisoformat(v["$date"]),
    "$duration": lambda v: timedelta(seconds=v["$duration"]),
    "$rational": lambda v: Fraction(v["$rational"]),
    "$complex": lambda v: complex(*v["$complex"]),
    "$range": _range,
    "$regexp": lambda v: RubyRegexp(*v["$regexp"]),
    "$set": lambda v: RubySet(decode(v["$set"])),
    "$class": lambda v: RubyClass(v["$class"]),
    "$module": lambda v: RubyModule(v["$module"]),
    "$gid": lambda v: RubyGlobalID(v["$gid"]),
    "$record": lambda v: RubyRecord(v["$record"], decode(v["columns"])),
    "$struct": lambda v: RubyStruct(v["$struct"], decode(v["members"])),
    "$object": lambda v: RubyObject(v["$object"], decode(v["ivars"])),
}


def assert_same(actual: Any, expected: Any, path: str = "payload") -> None:
    """Equal values of the same Python type, all the way down (== alone is too lenient:
    1 == 1.0 == True, a RubyObject equals a dict, datetimes compare instants only)."""
    assert _kind(actual) == _kind(expected), f"{path}: {actual!r} is not like {expected!r}"
    if isinstance(expected, RubyObject):
        assert actual.ruby_class == expected.ruby_class, f"{path}: class {actual.ruby_class}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{index}]")
    elif isinstance(expected, RubySet):
        assert_same(list(actual), list(expected), path)
    elif isinstance(expected, RubyRange):
        assert_same((actual.begin, actual.end), (expected.begin, expected.end), path)
        assert actual.exclude_end == expected.exclude_end, path
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), f"{path}: {actual!r} is not NaN"
    elif isinstance(expected, float):
        assert actual == expected and math.copysign(1, actual) == math.copysign(1, expected), path
    elif isinstance(expected, datetime):
        assert actual == expected and actual.tzinfo is not None, (
            f"{path}: {actual!r} != {expected!r}"
        )
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _kind(value: Any) -> type:
    # The Python type that matters; aware datetimes may carry any tzinfo class.
    return type(value)
