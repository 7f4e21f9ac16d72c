"""Rails delayed_job handlers (YAML written by Ruby's Psych) ⇄ Python, per SPEC §3.

- ``load(handler)`` → ``ParsedHandler(name, display_name, payload)``; raises only
  ``HandlerParseError``, within bounded time and memory for any input.
- ``fallback_name(handler)``: Ruby's ``ParseObjectFromYaml`` regex, for logs when load fails;
  ``fallback_dispatch_name(handler)``: the dispatch name it would have had (who fails it).
- ``dump_handler(name, payload, shape=...)``: YAML that Ruby's ``YAML.load_dj`` reads back as
  the same values (for enqueueing from Python).
- ``like_patterns(name)``: SQL ``LIKE`` prefilters for the rows a dispatch name may own.
- ``sure_prefixes(name)``: handler beginnings Psych writes only for that name's jobs;
  ``sure_regex(names)``: all of them as one regular expression.

Limits (each refusal is a HandlerParseError naming the limit): ``max_bytes`` (default
``MAX_HANDLER_BYTES``, 16 MiB: Rails' MySQL ``mediumtext``), nesting depth ``MAX_DEPTH``, and
``max_values`` values after expanding aliases (default ``MAX_NODES``); the worker passes its
``max_handler_bytes`` / ``max_handler_values`` settings. Within the defaults a handler loads
in well under a second with the libyaml binding (``FAST_PARSER``); ruamel's pure-Python
parser reads the same handlers the same way, ~10x slower (~10 s at the caps).
"""

from __future__ import annotations

from dj_consumer.errors import HandlerParseError
from dj_consumer.models import ParsedHandler
from dj_consumer.ruby_yaml._build import FAST_PARSER, MAX_DEPTH, MAX_NODES, build
from dj_consumer.ruby_yaml._dump import SHAPES, dump_handler
from dj_consumer.ruby_yaml._interpret import JOB_WRAPPER, PERFORMABLE, interpret
from dj_consumer.ruby_yaml._like import (
    fallback_dispatch_name,
    fallback_name,
    like_literal,
    like_patterns,
    sure_prefixes,
    sure_regex,
)
from dj_consumer.ruby_yaml._scalars import ScalarError

__all__ = [
    "FAST_PARSER",
    "JOB_WRAPPER",
    "MAX_DEPTH",
    "MAX_HANDLER_BYTES",
    "MAX_NODES",
    "PERFORMABLE",
    "SHAPES",
    "dump_handler",
    "fallback_dispatch_name",
    "fallback_name",
    "like_literal",
    "like_patterns",
    "load",
    "sure_prefixes",
    "sure_regex",
]

MAX_HANDLER_BYTES = 16 * 1024 * 1024


def load(handler: str | bytes, *, max_bytes: int = MAX_HANDLER_BYTES,
         max_values: int = MAX_NODES, pure: bool = False) -> ParsedHandler:
    """What a handler means to Ruby: dispatch name, Delayed::Job#name, and plain payload.
    ``pure``: parse with ruamel's pure-Python parser even where libyaml is installed."""
    try:
        text = _text(handler, max_bytes)
        built = build(text, max_values=max_values, pure=pure)
        if built is None:
            raise HandlerParseError("handler is empty (no YAML document)")
        return interpret(built)
    except HandlerParseError:
        raise
    except ScalarError as exc:  # a value Psych would refuse, found while building or interpreting
        raise HandlerParseError(str(exc)) from None
    except RecursionError:
        raise HandlerParseError("handler nests too deeply") from None
    except MemoryError:
        raise HandlerParseError("handler needs too much memory") from None
    except Exception as exc:  # a bug here must not stop the worker: report it as a parse error
        raise HandlerParseError(f"handler could not be read: {type(exc).__name__}: {exc}") from exc


def _text(handler: str | bytes, max_bytes: int) -> str:
    if isinstance(handler, (bytes, bytearray, memoryview)):
        _check_size(len(handler), max_bytes)
        try:
            return bytes(handler).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HandlerParseError(
                f"handler is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
            ) from None
    if not isinstance(handler, str):
        raise HandlerParseError(f"handler must be str or bytes, not {type(handler).__name__}")
    # A str's UTF-8 size is at most 4 bytes per character; count exactly only near the cap.
    if len(handler) * 4 > max_bytes:
        _check_size(len(handler.encode("utf-8", "surrogatepass")), max_bytes)
    return handler


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise HandlerParseError(
            f"handler is {size} bytes, over the {max_bytes} byte limit (the max_handler_bytes "
            "setting)")
