"""The root value of a handler → (dispatch name, Ruby's Delayed::Job#name, payload), SPEC §3."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from dj_consumer.errors import HandlerParseError
from dj_consumer.models import ParsedHandler
from dj_consumer.ruby_values import (
    RubyClass,
    RubyModule,
    RubyObject,
    RubyRange,
    RubyRecord,
    RubyRegexp,
    RubySet,
)
from dj_consumer.ruby_yaml._activejob import deserialize_arguments
from dj_consumer.ruby_yaml._build import Built
from dj_consumer.ruby_yaml._inspect import ruby_inspect

__all__ = ["BUILTIN_NAMES", "JOB_WRAPPER", "PERFORMABLE", "interpret", "ruby_class_name"]

JOB_WRAPPER = "ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper"
PERFORMABLE = frozenset({"Delayed::PerformableMethod", "Delayed::PerformableMailer"})

# The class a tagged root has in Ruby, when Python's value no longer says it.
_ROOT_TAG_CLASS = re.compile(r"^!ruby/[\w-]+:(.+)$")
_ROOT_TAG_NAMES = {
    "!ruby/range": "Range",
    "!ruby/regexp": "Regexp",
    "!ruby/class": "Class",
    "!ruby/module": "Module",
    "!ruby/object": "Object",
    "!ruby/struct": "Struct",
    "!ruby/exception": "Exception",
}
# delayed_job 1.x-2.0 wrote receivers and args of its Struct PerformableMethod as strings:
# "AR:Class:id" / "CLASS:Class" up to 1.8, "LOAD;Class[;id]" in 1.9.0pre-2.0.x (its
# STRING_FORMAT, a Ruby regex: ^ and $ are line anchors, \w is ASCII).
_OLD_AR = re.compile(r"^AR:([A-Z][\w:]*):(\d+)$")
_OLD_CLASS = re.compile(r"^CLASS:([A-Z][\w:]*)$")
_OLD_LOAD = re.compile(r"^LOAD;([A-Z][\w:]+)(?:;(\w+))?$", re.ASCII | re.MULTILINE)


def interpret(built: Built) -> ParsedHandler:
    root = built.value
    if isinstance(root, RubyObject) and not isinstance(root, RubyRecord):
        if root.ruby_class in PERFORMABLE:
            return _performable(root)
        if root.ruby_class == JOB_WRAPPER:
            return _job_wrapper(root)
        return ParsedHandler(root.ruby_class, root.ruby_class, dict(root))
    name = _root_class_name(built)
    return ParsedHandler(name, name, root)


def _root_class_name(built: Built) -> str:
    # `--- !ruby/object:Job` with no content is nil to Psych (an empty tagged scalar).
    if built.tag is not None and built.value is not None:
        match = _ROOT_TAG_CLASS.match(built.tag)
        if match:
            return match.group(1)
        if built.tag in _ROOT_TAG_NAMES:
            return _ROOT_TAG_NAMES[built.tag]
    return ruby_class_name(built.value)


def _performable(root: RubyObject) -> ParsedHandler:
    receiver = _old_receiver(root.get("object"))
    method = root.get("method_name", root.get("method"))
    if not isinstance(method, str) or not method:
        raise HandlerParseError(f"{root.ruby_class} without a method_name")
    args = root.get("args")
    args = [_old_receiver(arg) for arg in args] if isinstance(args, list) else []
    # PerformableMethod#display_name: "#{object}.#{m}" only when the receiver is_a?(Class).
    if isinstance(receiver, RubyClass) and not isinstance(receiver, RubyModule):
        name = f"{receiver}.{method}"
    else:
        name = f"{ruby_class_name(receiver)}#{method}"
    return ParsedHandler(name, name, {"object": receiver, "method_name": method, "args": args})


def _old_receiver(value: Any) -> Any:
    """A receiver or argument as the delayed_job that wrote the string loaded it.

    delayed_job 4.1.9 cannot load these Struct handlers at all (its PerformableMethod is no
    Struct: DeserializationError), so a Ruby 4.1 worker fails such a row. We decode them as
    the version that wrote them did instead, like its display_name: the only fleet that still
    writes them is a delayed_job 2.0 app, whose own workers run them this way, and a Python
    handler registered for the name asks for exactly that.
    """
    if isinstance(value, str) and not isinstance(value, RubyClass):
        if match := _OLD_AR.match(value):
            return RubyRecord(match.group(1), {"id": int(match.group(2))})
        if match := _OLD_CLASS.match(value):
            return RubyClass(match.group(1))
        if match := _OLD_LOAD.search(value):
            # 2.0's load: `$1.constantize.load_for_delayed_job($2)`: Class#load_for_delayed_job
            # is the class itself; a record class (ActiveRecord, MongoMapper) finds the id.
            name, key = match.group(1), match.group(2)
            if key is None:
                return RubyClass(name)
            return RubyRecord(name, {"id": int(key) if key.isdigit() else key})
    return value


def _job_wrapper(root: RubyObject) -> ParsedHandler:
    job_data = root.get("job_data")
    if not isinstance(job_data, dict):
        raise HandlerParseError("ActiveJob JobWrapper without job_data")
    job_class = job_data.get("job_class")
    if not isinstance(job_class, str) or not job_class:
        raise HandlerParseError("ActiveJob job_data without a job_class")
    payload = dict(job_data)
    payload["arguments"] = deserialize_arguments(job_data.get("arguments", []))
    # JobWrapper#display_name (Rails 5.2+); `#{array}` interpolates Array#inspect.
    display = (
        f"{job_class} [{_interpolate(job_data.get('job_id'))}] from "
        f"DelayedJob({_interpolate(job_data.get('queue_name'))}) with arguments: "
        f"{ruby_inspect(job_data.get('arguments'))}"
    )
    return ParsedHandler(job_class, display, payload)


def _interpolate(value: Any) -> str:
    """Ruby's "#{value}": to_s, which is "" for nil."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return ruby_inspect(value)


_PY_TO_RUBY: tuple[tuple[type, str], ...] = (
    (bool, "TrueClass"),  # before int: bool is an int in Python
    (RubyModule, "Module"),
    (RubyClass, "Class"),
    (str, "String"),
    (int, "Integer"),
    (float, "Float"),
    (Decimal, "BigDecimal"),
    (Fraction, "Rational"),
    (complex, "Complex"),
    (datetime, "Time"),
    (date, "Date"),
    (timedelta, "ActiveSupport::Duration"),
    (bytes, "String"),
    (list, "Array"),
    (RubySet, "Set"),
    (RubyRange, "Range"),
    (RubyRegexp, "Regexp"),
    (dict, "Hash"),
)


def ruby_class_name(value: Any) -> str:
    """The Ruby class of a loaded value (what ``value.class.name`` said in Ruby)."""
    if isinstance(value, RubyObject):
        return value.ruby_class
    if value is None:
        return "NilClass"
    if value is False:
        return "FalseClass"
    for python_type, ruby_name in _PY_TO_RUBY:
        if isinstance(value, python_type):
            return ruby_name
    return "Object"


# Names load() gives to roots that Psych writes without any class name in the text (a bare
# hash, string, number …): no LIKE pattern can find those, so they get no prefilter.
BUILTIN_NAMES = frozenset(
    {name for _, name in _PY_TO_RUBY} | set(_ROOT_TAG_NAMES.values())
    | {"NilClass", "FalseClass", "Object"}
)
