"""Python ⇄ real Ruby: what dump_handler writes, Ruby's YAML.load_dj reads as the same values;
what Ruby writes back, load() reads as the same values; Psych and our scalar rules agree; and
the committed fixture corpus is what tests/fixtures/generate.rb makes today.

Needs ruby with delayed_job, delayed_job_active_record, activejob and sqlite3 (Debian:
ruby-delayed-job-active-record ruby-activejob ruby-sqlite3). Skips without them, fails
when CI=true.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

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
from dj_consumer.ruby_yaml import dump_handler, load
from tests.conftest import unavailable
from tests.unit.conftest_yaml import FIXTURES, TRICKY_STRINGS, assert_same, decode
from tests.unit.test_ruby_yaml import PLAIN_SCALARS

pytestmark = pytest.mark.ruby

_probe: list[str | None] = []


def require_ruby() -> None:
    if not _probe:
        _probe.append(_ruby_problem())
    if _probe[0]:
        unavailable(_probe[0])


def _ruby_problem() -> str | None:
    if shutil.which("ruby") is None:
        return "ruby is not installed"
    check = subprocess.run(
        [
            "ruby",
            "-e",
            'require "sqlite3"; require "delayed_job_active_record"; require "active_job"',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        return f"ruby gems missing: {check.stderr.strip().splitlines()[-1:]}"
    return None


def ruby(request: dict[str, Any]) -> dict[str, Any]:
    require_ruby()
    proc = subprocess.run(
        ["ruby", str(FIXTURES / "roundtrip.rb")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


OBJECT_PAYLOAD: dict[str, Any] = {
    "int": 42,
    "big": 2**80,
    "floats": [1.5, -0.0, 1e20, 1e-7, math.inf],
    "none": None,
    "bools": [True, False],
    "strings": TRICKY_STRINGS,
    "decimals": [Decimal("-12.50"), Decimal("1.5E+40"), Decimal("0.000001")],
    "times": [
        datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-8))),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
    "date": date(2024, 2, 29),
    "bytes": b"\xff\x00binary",
    "nested": {"a": [1, {"b": None}], "": {}, "l": []},
    "odd_keys": {1: "int", None: "nil", "<<": "merge?"},
    "set": RubySet([1, "a"]),
    "range": RubyRange(1, 5, True),
    "regexp": RubyRegexp("a.b", "i"),
    "class": RubyClass("User"),
    "module": RubyModule("Maintenance"),
    "object": RubyObject("Address", {"city": "Bern", "zip": "3000"}),
    "struct": RubyStruct("NewsletterJob", {"user_id": 1, "subject": "Hi"}),
    "record": RubyRecord("User", {"id": 1, "name": "Alice"}),
    "rational": Fraction(1, 3),
}

ACTIVE_JOB_ARGUMENTS: list[Any] = [
    1,
    "two",
    None,
    True,
    2.5,
    {"k": [1.5], "nested": {"x": None}},
    date(2024, 1, 1),
    datetime(2024, 1, 1, 12, 30, 15, 250000, tzinfo=UTC),
    Decimal("9.99"),
    RubyGlobalID("gid://dj-fixtures/User/1"),
    RubyClass("User"),
    timedelta(minutes=5),
]

CASES: dict[str, tuple[str, Any, str]] = {
    "object": ("ValuesJob", OBJECT_PAYLOAD, "object"),
    "struct": ("NewsletterJob", {"user_id": 7, "subject": "Weekly"}, "struct"),
    "active_job": ("HelloJob", ACTIVE_JOB_ARGUMENTS, "active_job"),
    "active_job_data": (
        "MailerLikeJob",
        {"arguments": ["x@example.com"], "job_id": "j-1"},
        "active_job",
    ),
}


@pytest.fixture(scope="module")
def answers() -> dict[str, dict[str, Any]]:
    handlers = {
        slug: dump_handler(name, payload, shape=shape)
        for slug, (name, payload, shape) in CASES.items()
    }
    reply = ruby({"handlers": list(handlers.values())})
    return {
        slug: {"handler": handlers[slug], **answer}
        for slug, answer in zip(handlers, reply["handlers"], strict=True)
    }


@pytest.mark.parametrize("slug", list(CASES))
def test_ruby_reads_what_python_dumped(slug: str, answers: dict[str, dict[str, Any]]) -> None:
    answer = answers[slug]
    expected = answer["expectation"]
    parsed = load(answer["handler"])
    assert parsed.name == expected["name"]
    assert parsed.display_name == expected["display_name"]
    # Ruby's reading of our YAML, in SPEC §3 terms, is the payload we meant.
    assert_same(decode(expected["payload"]), parsed.payload)
    _name, meant, shape = CASES[slug]
    if shape != "active_job":
        assert_same(parsed.payload, meant)
    elif isinstance(meant, dict):
        assert parsed.payload["job_id"] == meant["job_id"]
        assert_same(parsed.payload["arguments"], meant["arguments"])
    else:
        assert_same(parsed.payload["arguments"], meant)


@pytest.mark.parametrize("slug", list(CASES))
def test_python_reads_what_ruby_reserialized(slug: str, answers: dict[str, dict[str, Any]]) -> None:
    again = load(answers[slug]["reserialized"])
    assert again.name == load(answers[slug]["handler"]).name
    assert_same(again.payload, load(answers[slug]["handler"]).payload)


# Beyond the unit table: odd corners where only Ruby can say what Psych does.
ORACLE_SCALARS = [
    "1_000.5", "+.inf", "+.INF", "-.Inf", ".NaN", "-0x1f", "+0b11", "0_7", "1:60", "12:30:45.5",
    "-1:30", "2024-1-2", "2024-01-02T03:04:05.5+01", "2024-01-02 03:04:05.123456789123 -00:30",
    "2024-13-01 00:00:00", ':"a b"', ":'c'", "1,2", "1,2.5", "0.", "-.", "+.5", ".5e+3", "1.e-2",
    "Null", "NULL", "~x", "yes!", "on_", "=", "<<", "_", "--", "0", "-0", "00", "0b",
    "1__0", "1_", "TRUE", "tRUE", "nO", "ñ", "Ωmega", "42abc", "4:2", "0:00:00",
]  # fmt: skip


def test_psych_and_python_read_plain_scalars_alike() -> None:
    texts = [text for text, _ in PLAIN_SCALARS] + ORACLE_SCALARS
    reply = ruby({"scalars": texts})
    for text, tagged in zip(texts, reply["scalars"], strict=True):
        python = load(f"--- !ruby/object:Holder\nv: {text}\n").payload["v"]
        assert_same(python, decode(tagged), f"scalar {text!r}")


def test_committed_fixtures_are_what_generate_rb_writes() -> None:
    require_ruby()
    proc = subprocess.run(
        ["ruby", str(FIXTURES / "generate.rb"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
