"""The Ruby side of recurring rows works on its own: tests/interop/ruby/recurring.rb (our
reimplementation of delayed_cron_job 0.9.0's plugin and the seed fork's `schedule`) with a
real Delayed::Worker and Debian's Fugit, checked by recurring_smoke.rb in SQLite.

Then Ruby and Python workers take turns on the same recurring rows (both conventions).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB, unavailable
from tests.interop.conftest import Interop
from tests.interop.helpers import ruby_url

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


# -- Ruby and Python take turns on the same recurring rows -------------------------------------

TURNS_RB = Path(__file__).resolve().parent / "ruby" / "recurring_turns.rb"
CRON = "*/2 * * * * *"  # every even second (Fugit's 6-field form, seconds first)
EVERY = 2  # seconds: Delayed::Job.schedule(job, every: 2)
TURNS = 20


def _turns_table(table: str) -> sa.Table:
    return sa.Table(f"{table}_turns", sa.MetaData(),
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("runner", sa.String(10)), sa.Column("job_id", sa.BigInteger),
                    sa.Column("slot", sa.DateTime), sa.Column("started_at", sa.DateTime))


def _ruby_turns(interop: Interop, command: str, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["ruby", str(TURNS_RB), command, "--url", ruby_url(interop.url), "--table",
         interop.table, *extra],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TZ": "UTC"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_ruby_and_python_workers_take_turns_on_recurring_rows(interop: Interop) -> None:
    """Rails enqueues a cron row and a reoccur_in row; a Ruby worker and a Python worker run
    them in turns, TURNS runs each: every run is a new slot (never two runs for one), cron
    slots are the expression's times, reoccur_in slots stay on the first run_at's grid."""
    db = interop.db
    turns = _turns_table(interop.table)
    turns.create(db.engine)
    try:
        ids = _ruby_turns(interop, "enqueue", "--cron", CRON, "--every", str(EVERY))
        db._table = None
        reg = Registry()

        @reg.run("RecurringTick")
        def tick(j: Job) -> None:
            with db.engine.begin() as conn:
                conn.execute(sa.insert(turns).values(
                    runner="python", job_id=j.id, slot=j.run_at,
                    started_at=datetime.now(UTC).replace(tzinfo=None)))

        first_grid = _run_at(db, ids["every"])
        for turn in range(TURNS):
            _wait_until_due(db, [ids["cron"], ids["every"]])
            if turn % 2 == 0:
                done = _ruby_turns(interop, "work", "--work-off", "2")
                assert (done["succeeded"], done["failed"]) == (2, 0), done
            else:
                w = make_worker(db.config(worker_id=f"py-turn-{turn}"), reg)
                try:
                    assert w.work_off(2) == (2, 0)
                finally:
                    w.close()
        with db.engine.connect() as conn:
            runs = conn.execute(sa.select(turns).order_by(turns.c.id)).all()
    finally:
        turns.drop(db.engine, checkfirst=True)

    for key in ("cron", "every"):
        mine = [r for r in runs if r.job_id == ids[key]]
        assert len(mine) == TURNS, (key, mine)
        assert [r.runner for r in mine] == ["ruby", "python"] * (TURNS // 2), key
        slots = [r.slot for r in mine]
        assert slots == sorted(set(slots)), f"{key}: a slot ran twice or out of order: {slots}"
        for r in mine:
            assert r.started_at >= r.slot - timedelta(seconds=1), f"{key}: ran before its slot"
    cron_slots = [r.slot for r in runs if r.job_id == ids["cron"]]
    assert all(s.second % 2 == 0 and s.microsecond == 0 for s in cron_slots), cron_slots
    every_slots = [r.slot for r in runs if r.job_id == ids["every"]]
    assert every_slots[0] == first_grid
    drift = [(s - first_grid).total_seconds() % EVERY for s in every_slots]
    assert drift == [0.0] * TURNS, f"reoccur_in slots left the grid: {every_slots}"

    rows = {r["id"]: r for r in interop.ruby.inspect([ids["cron"], ids["every"]])}
    assert rows[ids["cron"]]["attempts"] == TURNS  # delayed_cron_job counts every run
    assert rows[ids["every"]]["attempts"] == 0
    for row in rows.values():
        assert (row["failed"], row["locked_by"], row["last_error"]) == (False, None, None)


def _run_at(db: DB, job_id: int) -> datetime:
    with db.engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT run_at FROM {db.table} WHERE id = :id"),
                             {"id": job_id}).scalar_one()
    assert isinstance(value, datetime)
    return value


def _wait_until_due(db: DB, ids: list[int], timeout: float = 30) -> None:
    now_sql = ("SELECT UTC_TIMESTAMP(6)" if db.backend == "mariadb"
               else "SELECT CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS timestamp)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            now = conn.execute(sa.text(now_sql)).scalar_one()
        if all(_run_at(db, i) <= now for i in ids):
            return
        time.sleep(0.05)
    raise AssertionError(f"rows {ids} never came due")
