"""The `parse` scenario: handlers/s for typical Rails handlers with libyaml (ruamel.yaml.clib,
installed where a wheel exists) and with ruamel's pure-Python parser (everywhere else).

No database: ruby_yaml.load alone, on handlers real Psych wrote (tests/fixtures/handlers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.report import Section, rate, ratio
from dj_consumer import ruby_yaml

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

HANDLERS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "handlers"
# What a Rails app enqueues most: ActiveJob (plain and with every argument kind), a `.delay`
# call on a record and on a mailer, a Struct and a plain object.
TYPICAL = ["aj_simple", "aj_argument_kinds", "pm_ar_instance", "pm_mailer", "struct_simple",
           "object_nested"]


def _rate(handler: str, *, pure: bool, seconds: float) -> float:
    """Loads per second of `handler`, over at least `seconds` (best of three slices)."""
    best = 0.0
    for _ in range(3):
        count, started = 0, time.perf_counter()
        deadline = started + seconds / 3
        while True:
            for _ in range(20):
                ruby_yaml.load(handler, pure=pure)
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - started))
    return best


def parse(ctx: Context) -> None:
    seconds = 0.3 if ctx.quick else 1.0
    fast_available = ruby_yaml.FAST_PARSER
    s = Section("parse: handlers/s, one thread, libyaml (fast) and pure-Python parser",
                ["handler", "bytes", "fast", "pure", "fast/pure"])
    totals = {"fast": 0.0, "pure": 0.0}
    for slug in TYPICAL:
        handler = (HANDLERS / f"{slug}.yml").read_text(encoding="utf-8")
        ctx.log(f"parse {slug}")
        pure = _rate(handler, pure=True, seconds=seconds)
        fast = _rate(handler, pure=False, seconds=seconds) if fast_available else 0.0
        totals["pure"] += 1 / pure
        totals["fast"] += 1 / fast if fast else 0.0
        s.add(slug, len(handler.encode()), rate(fast) if fast else "-", rate(pure),
              ratio(fast, pure) if fast else "-")
    mix_pure = len(TYPICAL) / totals["pure"]
    mix_fast = len(TYPICAL) / totals["fast"] if totals["fast"] else 0.0
    s.add("mix (one of each)", "", rate(mix_fast) if mix_fast else "-", rate(mix_pure),
          ratio(mix_fast, mix_pure) if mix_fast else "-")
    if not fast_available:
        s.note("no libyaml binding installed here: only the pure parser was measured")
    s.note("handlers written by Psych (tests/fixtures/handlers); a worker parses each row it "
           "reserves once, so the pure parser costs the difference per job in CPU")
    ctx.report.sections.append(s)
