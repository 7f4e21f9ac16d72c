"""Scalars exactly as Psych reads them (psych/scalar_scanner.rb, psych/visitors/to_ruby.rb).

Psych does not use YAML 1.1/1.2 core-schema resolution: an untagged plain scalar goes through
``Psych::ScalarScanner#tokenize``, whose rules (``yes`` is true, ``1:30`` is 5400, ``:foo`` is a
Symbol, ``1e5`` is a String) are reproduced here so a handler means the same thing to us as to
Ruby. Tagged scalars follow ``ToRuby#deserialize``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from dj_consumer.ruby_values import RubyClass, RubyModule, RubyRange, RubyRegexp

__all__ = ["ScalarError", "is_string_tag", "parse_time", "tagged_scalar", "tokenize"]


class ScalarError(ValueError):
    """A scalar Ruby itself would refuse to load (Psych raises ArgumentError for it)."""


# Psych's regexes, translated. Ruby's [[:alpha:]] is Unicode letters: [^\W\d_] in Python.
# Psych's "stringish" test ends in `+` but is unanchored at the end, so one character is
# enough to decide it; matching just one keeps a 16 MB scalar from costing a 16 MB regex run.
_STRINGISH = re.compile(r"^[^\d.:-]?(?:[^\W\d_]|[_ \t\r\n\f\v!@#$%^&*(){}<>|/\\~;=])")
_TIME = re.compile(
    r"^-?\d{4}-\d{1,2}-\d{1,2}(?:[Tt]|\s+)\d{1,2}:\d\d:\d\d(?:\.\d*)?"
    r"(?:\s*(?:Z|[-+]\d{1,2}:?(?:\d\d)?))?$"
)
_DATE = re.compile(r"^\d{4}-(?:1[012]|0\d|\d)-(?:[12]\d|3[01]|0\d|\d)$")
_FLOAT = re.compile(r"^(?:[-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?)$")
_INTEGER_LEGACY = re.compile(
    r"^(?:[-+]?0b[0-1_,]+|[-+]?0[0-7_,]+|[-+]?(?:0|[1-9](?:[0-9]|,[0-9]|_[0-9])*)"
    r"|[-+]?0x[0-9a-fA-F_,]+)$"
)
_SEXAGESIMAL_INT = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9]){1,2}$")
_SEXAGESIMAL_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9]){1,2}\.[0-9_]*$")
_QUOTED_SYMBOL = re.compile(r"^:([\"'])(.*)\1", re.DOTALL)
_TIME_PARTS = re.compile(r"(\d+:\d+:\d+)(?:\.(\d*))?\s*(Z|[-+]\d+(:\d\d)?)?")
_RUBY_TO_I = re.compile(r"^\s*[-+]?\d+(?:_\d+)*")
_RUBY_TO_F = re.compile(r"^\s*[-+]?\d+(?:_\d+)*(?:\.\d+(?:_\d+)*)?")
_REGEXP = re.compile(r"^/(.*)/([mixn]*)$", re.DOTALL)
_RANGE_SPLIT = re.compile(r"([.]{2,3})")


def tokenize(text: str) -> Any:
    """Psych::ScalarScanner#tokenize: the value of an untagged plain scalar."""
    if not text:
        return None
    if text.isascii() and text.isdigit() and (text[0] != "0" or text == "0"):
        return int(text) if len(text) <= _MAX_DIGITS else _too_long(text)  # the common case
    if _STRINGISH.match(text) or "\n" in text:
        return _word(text)
    if _TIME.match(text):
        try:
            return parse_time(text)
        except ValueError:
            return text
    if _DATE.match(text):
        return _date_or_text(text)
    return _number_or_symbol(text)


# Only short words starting with one of these letters can be null or a boolean.
_NOT_NULL_OR_BOOL = re.compile(r"^[^ytonf~]", re.IGNORECASE)


def _word(text: str) -> Any:
    if len(text) > 5 or _NOT_NULL_OR_BOOL.match(text):
        return text
    lowered = text.lower()
    if text == "~" or lowered == "null":
        return None
    if lowered in ("yes", "true", "on"):
        return True
    if lowered in ("no", "false", "off"):
        return False
    return text


def _date_or_text(text: str) -> Any:
    year, month, day = (int(part) for part in text.split("-"))
    try:
        return date(year, month, day)
    except ValueError:
        return text  # Date.strptime raised ArgumentError: Psych keeps the string


def _number_or_symbol(text: str) -> Any:
    lowered = text.lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    if text.startswith(":") and len(text) > 1:
        quoted = _QUOTED_SYMBOL.match(text)
        name = quoted.group(2) if quoted else text
        return name.removeprefix(":")
    if _SEXAGESIMAL_INT.match(text):
        return _sexagesimal(text, _ruby_to_i)
    if _SEXAGESIMAL_FLOAT.match(text):
        return _sexagesimal(text, _ruby_to_f)
    if _FLOAT.match(text):
        if re.match(r"^[-+]?\.$", text):
            return text
        return float(re.sub(r"\.([Ee]|$)", r"\1", text.replace(",", "").replace("_", "")))
    if _INTEGER_LEGACY.match(text):
        return parse_int(text)
    return text


def _sexagesimal(text: str, convert: Any) -> Any:
    # Psych weights the parts 60**|index-2|: "1:30" is 1*3600 + 30*60. A Psych quirk, kept.
    total: Any = 0
    for index, part in enumerate(text.split(":")):
        total += convert(part) * 60 ** abs(index - 2)
    return total


def _ruby_to_i(text: str) -> int:
    match = _RUBY_TO_I.match(text)
    return int(match.group(0).replace("_", "")) if match else 0


def _ruby_to_f(text: str) -> float:
    match = _RUBY_TO_F.match(text)
    return float(match.group(0).replace("_", "")) if match else 0.0


# Python refuses to convert longer digit strings (CVE-2020-10735); no real job needs more.
_MAX_DIGITS = 4000


def _too_long(text: str) -> int:
    raise ScalarError(f"integer with {len(text)} digits; at most {_MAX_DIGITS} are read")


def parse_int(text: str) -> int:
    """Ruby's Integer() on a YAML integer with its ``,`` and ``_`` removed."""
    digits = text.replace(",", "").replace("_", "")
    if len(digits) > _MAX_DIGITS:
        _too_long(digits)
    sign = -1 if digits.startswith("-") else 1
    body = digits.lstrip("+-")
    try:
        if body.startswith(("0b", "0B")):
            return sign * int(body[2:], 2)
        if body.startswith(("0x", "0X")):
            return sign * int(body[2:], 16)
        if len(body) > 1 and body.startswith("0"):
            return sign * int(body[1:], 8)
        return sign * int(body, 10)
    except ValueError:
        raise ScalarError(f"invalid value for Integer(): {text!r}") from None


def parse_time(text: str) -> datetime:
    """Psych::ScalarScanner#parse_time, to an aware datetime (sub-microsecond digits dropped).

    A time without a zone is local time to Ruby, i.e. depends on the Ruby process's TZ; we
    read it as UTC, the zone Rails apps run their servers in.
    """
    date_part, time_part = re.split(r"[ tT]", text, maxsplit=1)
    ymd = re.match(r"^(-?\d{4})-(\d{1,2})-(\d{1,2})", date_part)
    hms = _TIME_PARTS.search(time_part)
    if ymd is None or hms is None:
        raise ValueError(text)
    year, month, day = (int(x) for x in ymd.groups())
    hour, minute, second = (int(x) for x in hms.group(1).split(":"))
    micro = int(Fraction(f"0.{hms.group(2)}") * 1_000_000) if hms.group(2) else 0
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=_zone(hms.group(3)))


def _zone(spec: str | None) -> timezone:
    if spec is None or spec == "Z":
        return UTC
    match = re.match(r"^([+\-]?\d{1,2}):?(\d{1,2})?$", spec)
    if match is None:
        raise ValueError(spec)
    # Psych's arithmetic, quirk included: "-00:30" has hours == 0, so it comes out as +00:30.
    seconds = int(match.group(1)) * 3600
    minutes = int(match.group(2) or 0) * 60
    seconds = seconds - minutes if seconds < 0 else seconds + minutes
    return timezone(timedelta(seconds=seconds))


_STRING_TAG = re.compile(r"^!(?:str|ruby/string)(?::.*)?$")


def is_string_tag(tag: str) -> bool:
    """!str, !ruby/string[:Class] or !!str: Psych makes a String of it."""
    return tag == "tag:yaml.org,2002:str" or _STRING_TAG.match(tag) is not None


def tagged_scalar(tag: str, text: str) -> Any:
    """ToRuby#deserialize for a scalar with an explicit tag."""
    if tag in ("!binary", "tag:yaml.org,2002:binary"):
        return _unpack_base64(text)
    if is_string_tag(tag):
        return text
    if tag == "!ruby/object:BigDecimal":
        return parse_big_decimal(text)
    if tag == "!ruby/object:DateTime":
        return parse_time(text)
    if tag == "!ruby/class":
        return RubyClass(text)
    if tag == "!ruby/module":
        return RubyModule(text)
    if tag in ("tag:yaml.org,2002:float", "!float"):
        return _float(text)
    if tag == "!ruby/regexp":
        return _regexp(text)
    if tag == "!ruby/range":
        return _range(text)
    if re.match(r"^!ruby/sym(bol)?:?", tag) or tag == "!ruby/encoding":
        return text
    if tag == "!ruby/object:Rational":
        return _rational(text)
    if tag == "!ruby/object:Complex":
        return _complex(text)
    return tokenize(text)  # Psych ignores tags it does not know on scalars


def _unpack_base64(text: str) -> bytes:
    # Ruby's unpack('m') skips anything outside the alphabet and tolerates missing padding.
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else None]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ScalarError(f"invalid !binary data: {exc}") from None


def parse_big_decimal(text: str) -> Decimal:
    """BigDecimal._load: ``"18:0.123e1"`` (the part before ``:`` is a precision hint)."""
    number = text.split(":", 1)[-1].strip()
    try:
        return Decimal(number)
    except InvalidOperation:
        raise ScalarError(f"invalid BigDecimal {text!r}") from None


def _float(text: str) -> float:
    value = tokenize(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScalarError(f"invalid value for Float(): {text!r}")
    return float(value)


def _regexp(text: str) -> RubyRegexp:
    match = _REGEXP.match(text)
    if match is None:
        return RubyRegexp(text, "")
    return RubyRegexp(match.group(1), match.group(2))


def _range(text: str) -> RubyRange:
    parts = _RANGE_SPLIT.split(text, maxsplit=1)
    if len(parts) != 3:
        raise ScalarError(f"invalid !ruby/range {text!r}")
    begin, dots, end = parts
    return RubyRange(tokenize(begin), tokenize(end), dots == "...")


def _rational(text: str) -> Fraction:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ScalarError(f"invalid Rational {text!r}") from None


def _complex(text: str) -> complex:
    try:
        return complex(text.strip().replace("i", "j"))
    except ValueError:
        raise ScalarError(f"invalid Complex {text!r}") from None
