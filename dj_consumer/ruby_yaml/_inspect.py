"""Ruby 2.x/3.x ``#inspect`` for the JSON-like values ActiveJob stores as job arguments.

Needed because JobWrapper#display_name (Delayed::Job#name, which Ruby logs and stores nowhere
but shows everywhere) interpolates the serialized argument array. Hash#inspect uses the
``{"a"=>1}`` form of Ruby < 3.4.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from dj_consumer.ruby_values import RubyObject

__all__ = ["ruby_float", "ruby_inspect"]

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\f": "\\f",
    "\v": "\\v",
    "\b": "\\b",
    "\a": "\\a",
    "\x1b": "\\e",
}


def ruby_inspect(value: Any) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _inspect_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ruby_float(value)
    if isinstance(value, Decimal):
        return _inspect_decimal(value)
    if isinstance(value, list):
        return "[" + ", ".join(ruby_inspect(item) for item in value) + "]"
    if isinstance(value, RubyObject):
        return f"#<{value.ruby_class}>"  # Ruby adds an address we cannot know
    if isinstance(value, dict):
        items = (f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


def ruby_float(value: float) -> str:
    """Float#to_s: "1.0", "1.0e+20", "1.0e-05", "Infinity", "NaN"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _inspect_string(text: str) -> str:
    out = ['"']
    for index, char in enumerate(text):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "#" and text[index + 1 : index + 2] in ("{", "$", "@"):
            out.append("\\#")  # would start an interpolation
        elif char.isprintable() or char in "\u200b\u200c\u200d":
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(f"\\u{{{ord(char):X}}}")
    out.append('"')
    return "".join(out)


def _inspect_decimal(value: Decimal) -> str:
    # BigDecimal#inspect is its to_s: "0.123e1"
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(str(d) for d in digits).rstrip("0") or "0"
    if text == "0":
        return "-0.0" if sign else "0.0"
    return f"{'-' if sign else ''}0.{text}e{len(digits) + exponent}"
