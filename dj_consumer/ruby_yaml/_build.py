"""YAML text → Python values, bounded, without ever building an arbitrary Python object.

We drive ruamel.yaml's *parser* (events) and build values ourselves with an explicit stack
instead of subclassing its Composer/SafeConstructor: that keeps every limit in one loop
(nesting depth, expanded size through aliases, recursive aliases) and never recurses, so
hostile input cannot exhaust the Python stack. Each node becomes one of a fixed set of
plain values (see ``_objects``) chosen by its Psych tag; no tag can name a Python callable.

ruamel's libyaml binding parses ~10x faster than its pure-Python parser (more on big handlers)
and is the very parser Psych wraps, so we use it when installed: ``ruamel.yaml.clib`` (wheels
for CPython on Linux, macOS and Windows, installed with dj_consumer there) or
``ruamel.yaml.clibz`` (built from source). Elsewhere the pure parser reads the same handlers
the same way, only slower.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.parser import Parser
from ruamel.yaml.reader import Reader
from ruamel.yaml.scanner import Scanner

from dj_consumer.errors import HandlerParseError
from dj_consumer.ruby_yaml._objects import build_mapping, build_sequence, hashable_key
from dj_consumer.ruby_yaml._scalars import tagged_scalar, tokenize


def _find_cparser() -> Any:
    """ruamel's optional libyaml binding (see the module docstring), or None."""
    for module in ("_ruamel_yaml_clibz", "_ruamel_yaml"):
        try:
            return importlib.import_module(module).CParser
        except (ImportError, AttributeError):
            continue
    return None


_CParser = _find_cparser()

__all__ = ["FAST_PARSER", "MAX_DEPTH", "MAX_NODES", "Built", "build"]

FAST_PARSER: bool = _CParser is not None

# Nesting deeper than this is refused. Rails handlers nest < 15 levels (job → receiver →
# attributes → value); the cap also bounds recursion in code that walks a payload.
MAX_DEPTH = 100
# Values after expanding aliases (default of the max_handler_values setting). Bounds "billion
# laughs" (10 aliases of 10 aliases of …), parse time (~3 µs a value with libyaml, ~60 µs
# without) and the cost of walking the payload. A handler that fills MySQL's 64 KB text
# column holds ~10,000 values.
MAX_NODES = 100_000


@dataclass(slots=True)
class Built:
    """The first document's root value, and its tag (for Ruby's view of the root's class)."""

    value: Any
    tag: str | None


@dataclass(slots=True)
class _Frame:
    tag: str | None
    anchor: str | None
    is_mapping: bool
    nodes_at_start: int
    items: list[Any] = field(default_factory=list)
    pending_key: Any = None
    merge_key: bool = False
    has_key: bool = False


class _PureEvents(Reader, Scanner, Parser):
    """ruamel's pure-Python reader+scanner+parser, without composer/constructor/resolver."""

    processing_version = (1, 1)  # Psych is YAML 1.1

    def __init__(self, text: str) -> None:
        self.comment_handling = None
        self._resolver = self
        Reader.__init__(self, text, loader=self)
        Scanner.__init__(self, loader=self)
        Parser.__init__(self, loader=self)

    def dispose(self) -> None:
        Parser.dispose(self)


def build(text: str, *, max_values: int = MAX_NODES, pure: bool = False) -> Built | None:
    """The first document of ``text`` as Ruby values; None when there is no document.
    ``pure``: ruamel's pure-Python parser even where libyaml is installed.

    Raises HandlerParseError for syntax errors and for input over the limits.
    """
    parser: Any = None
    try:
        parser = _CParser(text) if _CParser is not None and not pure else _PureEvents(text)
        return _Builder(max_values).run(parser.get_event)
    except YAMLError as exc:
        raise HandlerParseError(f"invalid YAML: {_one_line(exc)}") from None
    finally:
        if parser is not None:
            parser.dispose()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


class _Builder:
    """One pass over the events; the stack replaces recursion."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.root: Built | None = None

    def run(self, next_event: Callable[[], Event]) -> Built | None:
        while True:
            event = next_event()
            if isinstance(event, ScalarEvent):
                self._scalar(event)
            elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
                self._open(event)
            elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
                self._close()
            elif isinstance(event, AliasEvent):
                self._alias(event.anchor)
            elif isinstance(event, (DocumentEndEvent, StreamEndEvent)):
                # Psych.parse returns the first document; whatever follows is never read.
                return self.root

    def _count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.max_values:
            raise HandlerParseError(
                f"handler too large: more than {self.max_values} values after expanding aliases "
                "(the max_handler_values setting)"
            )

    def _scalar(self, event: ScalarEvent) -> None:
        self._count(1)
        tag = event.tag
        _plain, quoted = event.implicit
        if quoted:
            value: Any = event.value  # Psych: `return o.value if o.quoted`
        elif tag is None:
            value = tokenize(event.value)
        else:
            value = tagged_scalar(tag, event.value)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self._add(value, tag=tag)

    def _open(self, event: MappingStartEvent | SequenceStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise HandlerParseError(f"handler nests deeper than {MAX_DEPTH} levels")
        self._count(1)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        is_mapping = isinstance(event, MappingStartEvent)
        self.stack.append(_Frame(event.tag, event.anchor, is_mapping, self.nodes))

    def _close(self) -> None:
        frame = self.stack.pop()
        if frame.is_mapping:
            value = build_mapping(frame.tag, _merged(frame.items), depth=len(self.stack))
        else:
            value = build_sequence(frame.tag, frame.items)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (value, self.nodes - frame.nodes_at_start + 1)
        self._add(value, tag=frame.tag)

    def _alias(self, name: str) -> None:
        if name in self.open_anchors:
            raise HandlerParseError(f"recursive alias *{name} (a value that contains itself)")
        if name not in self.anchors:
            raise HandlerParseError(f"unknown alias *{name}")
        value, nodes = self.anchors[name]
        self._count(nodes)
        self._add(value, tag=None)

    def _add(self, value: Any, *, tag: str | None) -> None:
        if not self.stack:
            if self.root is None:
                self.root = Built(value, tag)
            return
        frame = self.stack[-1]
        if not frame.is_mapping:
            frame.items.append(value)
        elif not frame.has_key:
            frame.pending_key = value
            # Psych merges `<<` unless the key was explicitly tagged !!str.
            frame.merge_key = value == "<<" and tag != "tag:yaml.org,2002:str"
            frame.has_key = True
        else:
            frame.items.append((frame.pending_key, value, frame.merge_key))
            frame.has_key = False


def _merged(pairs: list[tuple[Any, Any, bool]]) -> dict[Any, Any]:
    """Psych's revive_hash: later keys win; ``<<: *a`` / ``<<: [*a, *b]`` merge hashes in."""
    result: dict[Any, Any] = {}
    for key, value, merge in pairs:
        if merge and isinstance(value, dict):
            result.update(value)
        elif merge and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for item in reversed(value):
                result.update(item)
        else:
            result[hashable_key(key)] = value
    return result
