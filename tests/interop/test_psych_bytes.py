"""`dj_consumer.enqueue` writes the handler Rails would write, byte for byte: Psych's style for
every String (plain, 'single', "double" with its escapes, |literal), libyaml's line folding
past 80 columns, its layout of sequences and mappings, and the tags of Ruby values — compared
with real Psych (tests/interop/ruby/psych_dump.rb) on hand-picked and generated payloads."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dj_consumer import ruby_yaml
from dj_consumer.ruby_values import (
    RubyClass,
    RubyModule,
    RubyObject,
    RubyRange,
    RubyRegexp,
    RubyStruct,
)
from tests.conftest import unavailable

pytestmark = pytest.mark.ruby

SCRIPT = Path(__file__).resolve().parent / "ruby" / "psych_dump.rb"

STRINGS = [
    "plain", "", " lead", "trail ", "yes", "no", "y", "n", "Y", "true", "null", "~", "1", "1.5",
    "0o7", "012", "089", ":sym", "a: b", "a #b", "a#b", "#x", "-", "- x", "-x", "?", "? x",
    "[x]", "{x}", "@x", "`x", "!x", "&x", "*x", "|", ">", "%x", "'q'", '"dq"', "it's",
    "multi\nline", "multi\nline\n", "trailing\n", "a\n\n", "\n", "\n\n", "\nlead", "  \nx",
    "x \ny", "\ttab", "café", "日本語", "emoji \U0001F600", "a" * 100, "word " * 30,
    "word " * 30 + "end", "two  spaces " * 12, "x" * 81, "line one\nline two " + "z" * 90,
    "2024-01-01", "2024-01-01 10:00:00", "1_000", "0x1F", "+1", ".5", "1e3", "1.0e+3",
    "Foo::Bar", "foo.bar@baz.com", "http://x.y/z?a=1&b=2", "a,b", "<<", "=", "\\back",
    "ctrl\x01", "nbsp\u00a0x", "  ", "a  b", "a\u2028b", "\r\n", "end:", "x:", "Null", "True",
    "off", "On", "0.", "-1", "--- x", "...", "a\\nb", "ü" * 50, "%", "1:20", "1:20:30",
    "\ufeffbom", "del\x7f", "nel\x85", "\u00e9\u0301", "\x00nul", "q'\"mixed",
    "long words " * 9 + "\nand a second line that is also long " * 3,
    "indented\n  code\n    block\n", " leading space\nsecond", "tail\n\n\n",
]


def ruby_dump(cases: list[dict[str, Any]]) -> list[str]:
    if shutil.which("ruby") is None:
        unavailable("ruby is not installed")
    proc = subprocess.run(["ruby", str(SCRIPT)], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0 and "cannot load such file" in proc.stderr:
        unavailable(f"Ruby cannot load what psych_dump.rb needs: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def compare(cases: list[dict[str, Any]], python: list[Any]) -> None:
    theirs = ruby_dump(cases)
    differ = []
    for case, payload, expected in zip(cases, python, theirs, strict=True):
        ours = ruby_yaml.dump_handler(case["name"], payload, shape=case.get("shape", "object"))
        if ours != expected:
            differ.append(f"payload {payload!r}\n  ruby:   {expected!r}\n  python: {ours!r}")
    assert not differ, f"{len(differ)} of {len(cases)} differ:\n" + "\n".join(differ[:5])


def test_every_string_style_matches_psych() -> None:
    payloads = [{"s": s} for s in STRINGS]
    payloads += [{"k": {s: 1 for s in STRINGS if "\x00" not in s}}]  # as hash keys too
    payloads += [{"l": STRINGS}, {"n": [[s, {"k": s}] for s in STRINGS[:20]]}]
    payloads += [{"key" * 50: "a very long key is written as ? key / : value"}]
    compare([{"name": "NewsletterJob", "payload": p} for p in payloads], payloads)


def test_layout_and_scalars_match_psych() -> None:
    payload = {"l": [1, "a", None, [2, 3], {"k": "v"}, [], {}, [[[]]]],
               "h": {"a": {"b": [1]}, "e": {}, "el": []}, "f": 1.5, "t": True, "flag": False,
               "i": -3, "big": 2**70, "fl": 1e20, "tiny": 1e-7, "fs": 0.1, "whole": 3.0,
               "nil": None, "y": "an attribute named y is plain", "h2": {"no": "a hash key is quoted"}}
    compare([{"name": "Billing::ChargeJob", "payload": payload},
             {"name": "EmptyJob", "payload": {}}], [payload, {}])


def test_ruby_values_match_psych() -> None:
    raw = b"\xff\x00abc" * 30
    cases: list[tuple[Any, Any]] = [
        ({"$dj": "bytes", "v": base64.b64encode(raw).decode()}, raw),
        ({"$dj": "class", "v": "String"}, RubyClass("String")),
        ({"$dj": "module", "v": "Kernel"}, RubyModule("Kernel")),
        ({"$dj": "regexp", "v": ["a b", "i"]}, RubyRegexp("a b", "i")),
        ({"$dj": "time", "v": "2024-01-02T03:04:05Z"}, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ({"$dj": "time", "v": "2024-01-02T03:04:05.25+05:30"},
         datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        ({"$dj": "date", "v": "2024-01-02"}, date(2024, 1, 2)),
        ({"$dj": "set", "v": ["a"]}, {"a"}),  # one member: a Python set has no order
        ({"$dj": "range", "v": [1, 10, True]}, RubyRange(1, 10, True)),
        ({"$dj": "object", "v": ["Address", {"city": "Köln", "zip": "50667"}]},
         RubyObject("Address", {"city": "Köln", "zip": "50667"})),
        ({"$dj": "object", "v": ["Empty", {}]}, RubyObject("Empty", {})),
        ({"$dj": "struct", "v": ["Point", {"x": 1, "y": "two words"}]},
         RubyStruct("Point", {"x": 1, "y": "two words"})),
        ({"$dj": "rational", "v": [1, 3]}, Fraction(1, 3)),
    ]
    # Each value once: Psych anchors a value it meets twice (&1 … *1), which this does not.
    ruby_side = [{"name": "ValueJob", "payload": {"v": r, "in_list": [1]}} for r, _ in cases]
    python = [{"v": p, "in_list": [1]} for _, p in cases]
    compare(ruby_side, python)


def test_a_struct_handler_matches_psych() -> None:
    payload = {"list_id": 7, "subject": "Hello: world"}
    compare([{"name": "NewsletterStruct", "shape": "struct", "payload": payload}], [payload])


def _generated(rnd: random.Random) -> Any:
    alphabet = [
        *"abcxyzABC019 _-.:#,?[]{}&*!|>'\"%@`\\/=+~^$()<;", "  ", "\n", "\n\n", "\t", "\r", "é", "日", "\u00a0", "\u2028", "\x85", "\x01", "\ufeff",
        "\U0001F600", "---", "...", "yes", "null", "1", "0.5", ": ", " #", "word ", "longerword"]

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.choice([0, 1, 2, 5, 20, 60, 150])))

    def value(depth: int) -> Any:
        r = rnd.random()
        if depth < 3 and r < 0.15:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        if depth < 3 and r < 0.3:
            return {text(): value(depth + 1) for _ in range(rnd.randint(0, 4))}
        if r < 0.35:
            return rnd.choice([None, True, False, 0, -5, 10**20, 1.5, 1e-7, 3.0])
        return text()

    return {f"k{i}": value(0) for i in range(rnd.randint(1, 5))}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_payloads_match_psych(seed: int) -> None:
    rnd = random.Random(seed)
    payloads = [_generated(rnd) for _ in range(300)]
    compare([{"name": "NewsletterJob", "payload": p} for p in payloads], payloads)
