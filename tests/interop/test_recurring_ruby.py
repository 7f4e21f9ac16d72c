"""The Ruby side of recurring rows works on its own: tests/interop/ruby/recurring.rb (our
reimplementation of delayed_cron_job 0.9.0's plugin and the seed fork's `schedule`) with a
real Delayed::Worker and Debian's Fugit, checked by recurring_smoke.rb in SQLite.

The later interop test where Ruby and Python workers take turns on one recurring row
builds on this helper; here it is proved before anything Python relies on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

SMOKE = Path(__file__).resolve().parent / "ruby" / "recurring_smoke.rb"

pytestmark = pytest.mark.ruby


def test_ruby_worker_runs_recurring_rows_as_delayed_cron_job_does() -> None:
    if shutil.which("ruby") is None:
        unavailable("ruby is not installed")
    probe = subprocess.run(
        ["ruby", "-e", 'require "delayed_job_active_record"; require "active_job"; '
                       'require "sqlite3"; require "fugit"'],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode != 0:
        unavailable(f"Ruby gems missing (ruby-fugit, ruby-sqlite3 …): {probe.stderr.strip()[-200:]}")
    run = subprocess.run(["ruby", str(SMOKE)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TZ": "UTC"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all recurring checks passed" in run.stdout
    assert run.stdout.count("\nok ") >= 30, run.stdout
