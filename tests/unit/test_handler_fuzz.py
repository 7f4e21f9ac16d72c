"""Property tests: no handler, however broken, makes load() do anything but return a
ParsedHandler or raise HandlerParseError, quickly; and dump_handler → load is the identity."""

from __future__ import annotations

import random
import time
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dj_consumer.errors import HandlerParseError
from dj_consumer.models import ParsedHandler
from dj_consumer.ruby_yaml import dump_handler, load
from dj_consumer.ruby_yaml._scalars import tokenize
from tests.unit.conftest_yaml import assert_same, fixtures

CORPUS = [f.handler for f in fixtures()]

# Pieces of YAML/Psych syntax to splice into handlers: tags, anchors, aliases, indicators.
TOKENS = [
    "!ruby/object:", "!ruby/struct:", "!ruby/class ", "!ruby/range ", "!ruby/regexp ",
    "!ruby/object:Set\n", "!ruby/hash-with-ivars", "!ruby/ActiveRecord:", "!binary ", "!!str ",
    "!ruby/object:BigDecimal ", "!ruby/object:ActiveSupport::TimeWithZone\n", "!omap", "!set",
    "&a ", "*a", "&b [*a, *a]", "<<: ", "? ", ": ", "- ", "[", "]", "{", "}", ",", "|", ">", "'",
    '"', "#", "%YAML 1.1\n", "---\n", "...\n", "\n", "\t", "  ", ":sym", "1:20", ".nan", "~",
    "job_data:", "arguments:", "_aj_globalid", "_aj_serialized", "concise_attributes:",
    "method_name: ", "object: ", "\x00", "\ufeff", "\u2028", "é", "🎉",
]  # fmt: skip

SLOW = 1.0  # seconds: the bound for one handler


def _check(handler: str | bytes) -> None:
    started = time.perf_counter()
    try:
        result = load(handler)
    except HandlerParseError as exc:
        assert str(exc)
    else:
        assert isinstance(result, ParsedHandler)
        assert isinstance(result.name, str)
        assert isinstance(result.display_name, str)
    assert time.perf_counter() - started < SLOW


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(CORPUS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(1, 6))):
        text = _mutate(rng, text, draw(st.sampled_from(TOKENS)))
    return text


def _mutate(rng: random.Random, text: str, token: str) -> str:
    if not text:
        return token
    i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    choice = rng.randrange(6)
    if choice == 0:
        return text[:i] + text[j:]  # delete a slice
    if choice == 1:
        return text[:i] + token + text[i:]  # splice in syntax
    if choice == 2:
        return text[:i] + text[i:j] * rng.randint(2, 5) + text[j:]  # repeat a slice
    if choice == 3:
        lines = text.split("\n")
        rng.shuffle(lines)
        return "\n".join(lines)
    if choice == 4:
        return text[:i] + text[i:j].replace("  ", " ") + text[j:]  # break indentation
    return (
        text[:i]
        + chr(rng.randrange(0x10FFFF + 1) if rng.random() < 0.2 else rng.randrange(128))
        + text[i:]
    )


FUZZ = settings(
    max_examples=400,
    deadline=None,  # the time bound is asserted per handler, without hypothesis' warm-up noise
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(mutated())
def test_mutated_fixtures_parse_or_fail_cleanly(handler: str) -> None:
    _check(handler)


@FUZZ
@given(st.lists(st.sampled_from([*TOKENS, *"abc:-! \n019."]), max_size=60).map("".join))
def test_token_soup_parses_or_fails_cleanly(handler: str) -> None:
    _check(handler)


@FUZZ
@given(
    st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b"--- !ruby/object:J\na: " + b)
)
def test_random_text_and_bytes_parse_or_fail_cleanly(handler: str | bytes) -> None:
    _check(handler)


# --- dump_handler → load round trip -------------------------------------------------------

_ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-8)),
        timezone(timedelta(minutes=-30)),
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: d + Decimal(0))
    | st.dates()
    | st.datetimes(timezones=_ZONES)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    # Names Psych reads back as true/false/nil (on, yes, null …) are refused by dump_handler
    # (test_ruby_yaml: test_attribute_names_psych_misreads_are_refused).
    st.dictionaries(st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z").filter(lambda k: tokenize(k) == k),
                    VALUES, max_size=6),
    st.sampled_from(["object", "struct"]),
)
def test_dump_then_load_is_identity(payload: dict[str, Any], shape: str) -> None:
    parsed = load(dump_handler("Fuzz::Job", payload, shape=shape))
    assert parsed.name == "Fuzz::Job"
    assert_same(parsed.payload, payload)


ARGUMENTS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text().filter(lambda k: not k.startswith("_aj_")), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ARGUMENTS, max_size=5))
def test_active_job_dump_then_load_is_identity(arguments: list[Any]) -> None:
    parsed = load(dump_handler("FuzzJob", arguments, shape="active_job"))
    assert_same(parsed.payload["arguments"], arguments)
