"""Every handler real Ruby wrote (tests/fixtures/handlers) loads to what Ruby says it means."""

from __future__ import annotations

import pytest

from dj_consumer.errors import HandlerParseError
from dj_consumer.ruby_yaml import (
    JOB_WRAPPER,
    fallback_dispatch_name,
    fallback_name,
    like_patterns,
    load,
    sure_prefixes,
    sure_regex,
)
from tests.unit.conftest_yaml import Fixture, assert_same, fixtures

pytestmark = pytest.mark.usefixtures("yaml_parser")

CORPUS = fixtures()


def test_the_corpus_covers_spec_section_3() -> None:
    slugs = {f.slug for f in CORPUS}
    assert len(CORPUS) >= 40
    for prefix in ("object_", "struct_", "values_", "pm_", "aj_", "legacy_"):
        assert any(s.startswith(prefix) for s in slugs), prefix


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_fixture_loads_as_ruby_says(fixture: Fixture) -> None:
    parsed = load(fixture.handler)
    assert parsed.name == fixture.name
    assert parsed.display_name == fixture.display_name
    assert_same(parsed.payload, fixture.payload)


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_fixture_loads_the_same_from_bytes(fixture: Fixture) -> None:
    assert load(fixture.handler.encode("utf-8")) == load(fixture.handler)


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_like_patterns_never_exclude_a_fixture(fixture: Fixture) -> None:
    assert any(
        all(_like(pattern, fixture.handler) for pattern in group)
        for group in like_patterns(fixture.name)
    )


# Every dispatch name in the corpus, and look-alikes of them (longer, shorter, other case).
NAMES = sorted({f.name for f in CORPUS} | {n + suffix for f in CORPUS for n in [f.name.split("#")[0].split(".")[0]]
                                           for suffix in ("Bar", "::Inner")}
               | {f.name[:-1] for f in CORPUS} | {f.name.lower() for f in CORPUS})


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_a_sure_prefix_belongs_to_one_name(fixture: Fixture) -> None:
    # Store claims a row in the same round trip that finds it when its handler starts with a
    # sure prefix, before parsing: such a row must never be another name's.
    for name in NAMES:
        if any(fixture.handler.startswith(p) for p in sure_prefixes(name)):
            assert name == fixture.name == load(fixture.handler).name


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_sure_regex_is_the_sure_prefixes(fixture: Fixture) -> None:
    import re

    for names in [[n] for n in NAMES] + [NAMES]:
        regex = sure_regex(names)
        by_prefix = any(fixture.handler.startswith(p) for n in names for p in sure_prefixes(n))
        assert (regex is not None and re.match(regex, fixture.handler) is not None) == by_prefix
        # Also behind other text, or with the tag's case changed: never.
        if regex is not None:
            assert re.match(regex, "x\n" + fixture.handler) is None
            assert re.match(regex, fixture.handler.replace("ruby/", "Ruby/")) is None


@pytest.mark.parametrize("fixture", [f for f in CORPUS if f.slug.startswith(("object_", "struct_", "aj_"))],
                         ids=lambda f: f.slug)
def test_psych_objects_structs_and_active_jobs_have_a_sure_prefix(fixture: Fixture) -> None:
    assert any(fixture.handler.startswith(p) for p in sure_prefixes(fixture.name))


@pytest.mark.parametrize("name", ["User#send_welcome", "UserMailer.welcome", "Hash", "String",
                                  "Delayed::PerformableMethod", "Foo Bar", "lower", ""])
def test_names_with_no_sure_prefix(name: str) -> None:
    from dj_consumer.ruby_yaml import JOB_WRAPPER

    assert sure_prefixes(name) == ()
    assert sure_prefixes(JOB_WRAPPER) == ()


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_fallback_name_is_rubys_regex(fixture: Fixture) -> None:
    # ParseObjectFromYaml finds the first `!ruby/x:Name` tag: the root's for these handlers.
    name = fallback_name(fixture.handler)
    assert name is not None
    assert fixture.handler.startswith(f"--- !ruby/object:{name}") or fixture.handler.startswith(
        f"--- !ruby/struct:{name}"
    )


def _like(pattern: str, text: str) -> bool:
    """SQL LIKE with ESCAPE '!', evaluated in Python (as SQLite does, case-sensitively)."""
    import re

    regex = []
    chars = iter(pattern)
    for char in chars:
        if char == "!":
            regex.append(re.escape(next(chars)))
        elif char == "%":
            regex.append(".*")
        elif char == "_":
            regex.append(".")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), text, re.DOTALL) is not None


# A broken tail after the part Psych always writes first.
BREAKS = ["  oops: [unclosed\n", "\tbad: tab\n", "x: *nowhere\n"]


@pytest.mark.parametrize("fixture", CORPUS, ids=lambda f: f.slug)
def test_fallback_dispatch_name_is_the_intact_name_or_rubys(fixture: Fixture) -> None:
    # Whatever is cut off or broken, the fallback is either Ruby's regex name or the name the
    # intact handler has: never a third name (it decides which worker fails the row).
    for cut in [*range(0, len(fixture.handler), 7), len(fixture.handler)]:
        for tail in ["", "--- !ruby/object:Other\n", *BREAKS]:
            broken = fixture.handler[:cut] + tail
            assert fallback_dispatch_name(broken) in (fallback_name(broken), fixture.name), broken


def _wrapper_with_readable_name(fixture: Fixture) -> bool:
    first, second = fixture.handler.split("\n")[:2]
    return first.endswith(JOB_WRAPPER) or (first.endswith(("PerformableMethod", "PerformableMailer"))
                                           and second.startswith(("object: !ruby/object:",
                                                                  "object: !ruby/ActiveRecord:",
                                                                  "object: !ruby/class ")))


WRAPPERS = [f for f in CORPUS if _wrapper_with_readable_name(f)]


def test_most_wrappers_in_the_corpus_have_a_readable_name() -> None:
    assert len(WRAPPERS) >= 15


@pytest.mark.parametrize("fixture", WRAPPERS, ids=lambda f: f.slug)
def test_a_broken_wrapper_keeps_the_name_its_beginning_gives(fixture: Fixture) -> None:
    for tail in BREAKS:
        broken = fixture.handler + tail
        with pytest.raises(HandlerParseError):
            load(broken)
        assert fallback_dispatch_name(broken) == fixture.name
