"""Cheap text tests on a handler: Ruby's fallback name regex, and SQL LIKE prefilters."""

from __future__ import annotations

import re
from collections.abc import Iterable

from dj_consumer.ruby_yaml._dump import CLASS_NAME, CONSTANT_PATH
from dj_consumer.ruby_yaml._interpret import BUILTIN_NAMES, JOB_WRAPPER, PERFORMABLE
from dj_consumer.ruby_yaml._objects import SPECIAL_CLASSES

__all__ = ["BUILTIN_NAMES", "fallback_dispatch_name", "fallback_name", "like_literal",
           "like_patterns", "sure_prefixes", "sure_regex"]

# Delayed::Backend::Base::ParseObjectFromYaml = %r{\!ruby/\w+\:([^\s]+)}; Ruby's \w and \s
# are ASCII-only here.
_PARSE_OBJECT_FROM_YAML = re.compile(r"!ruby/[A-Za-z0-9_]+:([^ \t\r\n\f\v]+)")

def fallback_name(handler: str | bytes) -> str | None:
    """The class name Ruby's Delayed::Job#name falls back to when the handler cannot load."""
    text = handler.decode("utf-8", "replace") if isinstance(handler, bytes) else handler
    match = _PARSE_OBJECT_FROM_YAML.search(text)
    return match.group(1) if match else None


# The beginnings Psych writes for the two wrappers, read only as far as they are certain:
# job_data's first key is job_class; a PerformableMethod's keys are object (whose nested
# lines are all indented), then method_name.
_AJ_HEAD = re.compile(rf"--- !ruby/object:{re.escape(JOB_WRAPPER)}\njob_data:\n  job_class: ({CONSTANT_PATH})\n")
_PM_HEAD = re.compile(
    rf"--- !ruby/object:Delayed::Performable(?:Method|Mailer)\n"
    rf"object: (?:!ruby/(?:object|ActiveRecord):({CONSTANT_PATH})|!ruby/class '({CONSTANT_PATH})')(?: \{{\}})?\n"
    r"(?:[ ][^\n]*\n|\n)*"
    r"method_name: (?::|!ruby/sym(?:bol)? )([A-Za-z_][A-Za-z0-9_]*[!?=]?)\n")


def fallback_dispatch_name(handler: str | bytes) -> str | None:
    """The dispatch name of a handler that cannot load, for choosing who fails it: what load()
    gives the same handler intact — an ActiveJob's job_class, a `.delay` call's C#m / C.m —
    where its beginning says so for certain (Psych's own layout); else fallback_name.

    Ruby's fallback regex names the wrapper class (JobWrapper, PerformableMethod), which no
    Python handler is registered for, so such a row of ours would never be failed.
    """
    text = handler.decode("utf-8", "replace") if isinstance(handler, bytes) else handler
    if match := _AJ_HEAD.match(text):
        return match.group(1)
    if (match := _PM_HEAD.match(text)) is not None:
        instance_of, klass, method = match.groups()
        if klass is not None:
            return f"{klass}.{method}"
        # load() names a few classes after the Ruby value they become (TimeWithZone → Time).
        if instance_of not in BUILTIN_NAMES and instance_of not in SPECIAL_CLASSES:
            return f"{instance_of}#{method}"
    return fallback_name(text)


def like_patterns(name: str) -> list[tuple[str, ...]]:
    """SQL LIKE prefilters for rows whose handler may load() to dispatch name ``name``.

    A row can be ``name``'s only if its handler matches every pattern of at least one tuple;
    an empty tuple matches every row. Patterns escape ``%``, ``_`` and ``!`` with ``!`` (see
    like_literal): the caller writes ``handler LIKE :p ESCAPE '!'``, the same on every dialect
    (SQLite has no default escape; a backslash means different things to MySQL and the rest).
    They over-approximate — re-check with load() — but never miss a form Psych writes.
    """
    receiver, separator, method = _split_method(name)
    if separator:
        # Delayed::PerformableMethod / PerformableMailer: `method_name: :m`, `!ruby/symbol m`,
        # old `method: :m`; receiver `!ruby/object:C`, `!ruby/ActiveRecord:C`, `!ruby/class
        # 'C'`, old "AR:C:1" / "CLASS:C" / "LOAD;C;1" all spell C out — unless C is a core class.
        patterns = [_contains("Delayed::Performable"), _contains(method)]
        if receiver not in BUILTIN_NAMES:
            patterns.append(_contains(receiver))
        return [tuple(patterns)]
    if name in BUILTIN_NAMES:
        return [()]
    return [
        # !ruby/object:C, !ruby/struct:C, !ruby/ActiveRecord:C, !ruby/hash:C, …
        (f"%{like_literal('!ruby/')}%:{like_literal(name)}%",),
        # ActiveJob: `job_class: C` inside the JobWrapper.
        (_contains("JobWrapper"), _contains("job_class"), _contains(name)),
    ]


def sure_prefixes(name: str) -> tuple[str, ...]:
    """Handler beginnings that Psych writes for ``name``'s jobs and for no other dispatch name.

    A handler that starts with one of them loads to ``name`` (or, if the rest is broken, falls
    back to it), so a worker may claim such a row before parsing it. Plain text, not LIKE
    patterns. Empty for names with no such beginning: methods (``C#m``), core classes, the
    wrappers themselves. A prefix may match a hand-written handler that loads to something
    else (``--- !ruby/object:C\n...``: an empty document); the caller re-checks and hands
    such a row back.
    """
    # A constant path is all a tag can spell before the whitespace that ends it.
    if not CLASS_NAME.match(name) or name in BUILTIN_NAMES or name in PERFORMABLE \
            or name == JOB_WRAPPER:
        return ()
    # The tag ends at the newline (attributes follow) or at a space (` {}`: no attributes).
    tagged = [f"--- !ruby/{kind}:{name}{end}" for kind in ("object", "struct") for end in ("\n", " ")]
    # ActiveJob: the wrapper, then job_data's first key.
    return (*tagged, f"--- !ruby/object:{JOB_WRAPPER}\njob_data:\n  job_class: {name}\n")


def sure_regex(names: Iterable[str]) -> str | None:
    """One regular expression (PCRE, Python's re alike) for every sure prefix of ``names``:
    a handler matches it exactly when it starts with one of them. None when there is none.

    Shorter than the prefixes one by one (the SQL server parses it on every reserve);
    ``(?-ix:…)`` and ``\\A`` keep it literal and anchored whatever the server's default flags.
    """
    sure = [n for n in names if sure_prefixes(n)]
    if not sure:
        return None
    alts = "|".join(sure)  # constant paths: nothing in them is special to a regex
    return (f"\\A(?-ix:--- !ruby/(?:(?:object|struct):(?:{alts})[ \n]"
            f"|object:{JOB_WRAPPER}\njob_data:\n  job_class: (?:{alts})\n))")


def _split_method(name: str) -> tuple[str, str, str]:
    # Class names have no "#" or "."; method names (`save!`, `[]`, `==`) come after the first.
    match = re.match(r"^([^#.]+)([#.])(.+)$", name)
    if match is None:
        return name, "", ""
    return match.group(1), match.group(2), match.group(3)


def _contains(text: str) -> str:
    return f"%{like_literal(text)}%"


def like_literal(text: str) -> str:
    """``text`` matched literally by ``LIKE … ESCAPE '!'``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
