"""dj_consumer.cron against real Fugit: tests/fixtures/cron/fugit.json, written by
tests/fixtures/cron_fugit.rb (`make fixtures`) with the Fugit delayed_cron_job uses.

Every expression must parse (or be refused) as Fugit does and give Fugit's next run times,
except the few listed in DIVERGENCES, each of which must really differ (so the list can
not go stale) and is explained in docs/recurring.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dj_consumer import cron
from tests.conftest import ROOT, unavailable

FIXTURE = ROOT / "tests" / "fixtures" / "cron" / "fugit.json"
GENERATOR = ROOT / "tests" / "fixtures" / "cron_fugit.rb"
DOC = json.loads(FIXTURE.read_text())
CASES: list[dict[str, Any]] = DOC["cases"]

STRIPPED = "surrounding whitespace is ignored, as Fugit >= 1.6 does"
REFUSED = "Fugit syntax dj_consumer refuses rather than runs differently"
DIVERGENCES = {
    " 0 9 * * *": STRIPPED,
    "0 9 * * * ": STRIPPED,
    "0 0 -2 * *": REFUSED,
    "0 10 * * fri#-2": REFUSED,
    "0 12 * * mon%2": REFUSED,
    "0 12 * * tue%2+1": REFUSED,
    "0 0 * * fri-mon/2": "Fugit 1.5.2 reads it as every day, 1.12.3 as Fri and Sun: refused",
    "0 2 * * * Australia/Lord_Howe": "cronsim skips 02:00 right after a half-hour DST shift",
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


def ours(case: dict[str, Any]) -> str | list[list[str]]:
    """What dj_consumer.cron makes of the case: "error" or, per `from`, the next run times."""
    try:
        schedule = cron.parse(case["expr"])
    except cron.CronError:
        return "error"
    series = []
    for s in case.get("series", [{"from": "2024-05-06T07:08:09Z", "next": [None]}]):
        t, times = utc(s["from"]), []
        for _ in s["next"]:
            t = schedule.next_after(t)
            times.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        series.append(times)
    return series


def fugits(case: dict[str, Any]) -> str | list[list[str]]:
    return "error" if "error" in case else [s["next"] for s in case["series"]]


def test_the_fixture_is_fugits_and_covers_the_table() -> None:
    assert DOC["fugit"] == "1.5.2" and DOC["process_tz"] == "UTC"
    groups = {c["group"] for c in CASES}
    assert {"basic", "names", "L", "#", "seconds", "alias", "zone", "dst", "invalid"} <= groups
    assert len(CASES) >= 100
    assert set(DIVERGENCES) <= {c["expr"] for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[repr(c["expr"]) for c in CASES])
def test_next_times_agree_with_fugit(case: dict[str, Any]) -> None:
    if case["expr"] in DIVERGENCES:
        assert ours(case) != fugits(case), f"no longer differs: {DIVERGENCES[case['expr']]}"
    else:
        assert ours(case) == fugits(case)


@pytest.mark.ruby
@pytest.mark.slow  # ~12 s: Fugit 1.5.2 walks day by day
def test_fixture_matches_what_fugit_says_today() -> None:
    # The committed fixture must be what the generator writes with the Fugit installed here.
    if shutil.which("ruby") is None:
        unavailable("ruby is not installed")
    probe = subprocess.run(["ruby", "-e", 'require "fugit"; require "active_support"'],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        unavailable(f"ruby-fugit is not installed: {probe.stderr.strip().splitlines()[-1:]}")
    check = subprocess.run(["ruby", str(GENERATOR), "--check"], capture_output=True, text=True,
                           timeout=120, cwd=Path(ROOT))
    assert check.returncode == 0, check.stdout + check.stderr
