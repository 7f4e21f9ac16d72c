"""Issue 15, the worker side: rows with `cron` (delayed_cron_job 0.9.0) and `reoccur_in`
(the seed fork's columns, dj_consumer's no-drift rule) are kept and rescheduled exactly as
docs/recurring.md says; tables without the columns are worked as before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from dj_consumer import Job, Registry, make_worker
from dj_consumer import cron as cronlib
from dj_consumer.config import Config
from dj_consumer.recurring import detect
from dj_consumer.schema import add_recurring_columns
from dj_consumer.store import Store
from tests.conftest import DB
from tests.integration.test_protocol import obj
from tests.integration.test_unparseable_names import broken_active_job

DB_NOW = {
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "postgresql": "SELECT CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS timestamp)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


@pytest.fixture
def rdb(db: DB) -> Iterator[DB]:
    add_recurring_columns(db.engine, db.table)
    db._table = None
    yield db


def cols(db: DB, job_id: int) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(
            f"SELECT id, attempts, run_at, locked_by, locked_at, last_error, failed_at, cron, "
            f"reoccur_in, last_run_at, created_at FROM {db.table} WHERE id = :id"),
            {"id": job_id}).first()


def set_cols(db: DB, job_id: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {db.table} SET {sets} WHERE id = :id").bindparams(
            *[sa.bindparam(k, type_=sa.DateTime()) for k, v in values.items()
              if isinstance(v, datetime)]), {"id": job_id, **values})


def db_now(db: DB) -> datetime:
    with db.engine.connect() as conn:
        value = conn.execute(sa.text(DB_NOW[db.backend])).scalar()
    return datetime.fromisoformat(value) if isinstance(value, str) else value.replace(tzinfo=None)


def as_dt(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class Calls:
    def __init__(self) -> None:
        self.runs: list[int] = []
        self.failures: list[int] = []
        self.errors: list[int] = []


def registry(calls: Calls, on_run: Any = None) -> Registry:
    reg = Registry()

    @reg.run("Tick")
    def tick(j: Job) -> None:
        calls.runs.append(j.id)
        if on_run is not None:
            on_run(j)

    @reg.run("Boom")
    def boom(j: Job) -> None:
        calls.runs.append(j.id)
        raise ValueError("boom")

    @reg.run("Slow")
    def slow(j: Job) -> None:
        calls.runs.append(j.id)
        j.timed_out.wait(3)  # returns at max_run_time: the attempt still counts as timed out

    @reg.run("HelloJob")
    def hello(j: Job) -> None:
        calls.runs.append(j.id)

    for name in ("Tick", "Boom", "Slow", "HelloJob"):
        reg.failure(name)(lambda j, exc: calls.failures.append(j.id))
        reg.error(name)(lambda j, exc: calls.errors.append(j.id))
    return reg


def work(db: DB, reg: Registry, n: int = 10, **cfg: Any) -> tuple[int, int]:
    w = make_worker(db.config(**cfg), reg)
    try:
        return w.work_off(n)
    finally:
        w.close()


def expect_next(expr: str, before: datetime, after: datetime, got: Any) -> None:
    s = cronlib.parse(expr)
    allowed = {s.next_after(before.replace(microsecond=0)), s.next_after(after)}
    assert as_dt(got) in allowed, (got, allowed)


YEARLY = "0 0 1 1 *"
EVERY_SECOND = "* * * * * *"


def test_a_cron_row_is_kept_and_rescheduled_after_a_success(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"), attempts=3)
    set_cols(rdb, job_id, cron=YEARLY, last_error="an old error")
    created = cols(rdb, job_id).created_at
    before = db_now(rdb)
    assert work(rdb, registry(calls)) == (1, 0)
    after = db_now(rdb)
    row = cols(rdb, job_id)
    assert calls.runs == [job_id], "ran once, not again at once"
    assert (row.id, row.attempts, row.locked_by, row.locked_at, row.last_error, row.failed_at,
            row.cron, row.created_at) == (job_id, 4, None, None, None, None, YEARLY, created)
    expect_next(YEARLY, before, after, row.run_at)


def test_every_run_counts_and_next_time_is_after_the_database_now(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=EVERY_SECOND)
    for turn in range(1, 4):
        before = db_now(rdb)
        assert work(rdb, registry(calls), 1) == (1, 0)
        row = cols(rdb, job_id)
        assert row.attempts == turn
        assert as_dt(row.run_at) > before.replace(microsecond=0)
        assert as_dt(row.run_at) <= db_now(rdb) + timedelta(seconds=1)
        time.sleep(max(0.0, (as_dt(row.run_at) - db_now(rdb)).total_seconds()) + 0.05)
    assert len(calls.runs) == 3


def test_a_failed_cron_run_is_not_retried_nor_failed_for_good(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Boom"), attempts=24)
    set_cols(rdb, job_id, cron=YEARLY)
    before = db_now(rdb)
    assert work(rdb, registry(calls), max_attempts=25) == (0, 1)
    after = db_now(rdb)
    row = cols(rdb, job_id)
    assert (row.attempts, row.locked_by, row.failed_at) == (25, None, None)
    assert row.last_error.startswith("ValueError: boom\nTraceback")
    expect_next(YEARLY, before, after, row.run_at)
    assert calls.errors == [job_id] and calls.failures == [], "error hook yes, failure hook no"
    # and the next (failed) run still keeps it: attempts past max_attempts
    set_cols(rdb, job_id, run_at=db_now(rdb) - timedelta(seconds=5))
    work(rdb, registry(calls), max_attempts=25)
    row = cols(rdb, job_id)
    assert (row.attempts, row.failed_at) == (26, None)


def test_a_timed_out_cron_run_is_kept_with_its_error(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Slow"))
    set_cols(rdb, job_id, cron=YEARLY)
    before = db_now(rdb)
    work(rdb, registry(calls), max_run_time=1)
    row = cols(rdb, job_id)
    assert (row.attempts, row.locked_by, row.failed_at) == (1, None, None)
    assert "expired" in row.last_error or "max_run_time" in row.last_error, row.last_error
    expect_next(YEARLY, before, db_now(rdb), row.run_at)


def test_cron_cleared_while_running_deletes_the_row(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=YEARLY)
    work(rdb, registry(calls, lambda j: set_cols(rdb, j.id, cron=None)))
    assert cols(rdb, job_id) is None
    other = rdb.insert(obj("Boom"))
    set_cols(rdb, other, cron=YEARLY)
    work(rdb, boom_clearing(rdb))
    assert cols(rdb, other) is None, "after a failure too"


def boom_clearing(db: DB) -> Registry:
    reg = Registry()

    @reg.run("Boom")
    def boom(j: Job) -> None:
        set_cols(db, j.id, cron="")
        raise ValueError("boom")

    return reg


def test_a_changed_expression_is_used_for_the_next_run(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=YEARLY)
    before = db_now(rdb)
    work(rdb, registry(calls, lambda j: set_cols(rdb, j.id, cron="0 0 1 7 *")))
    row = cols(rdb, job_id)
    expect_next("0 0 1 7 *", before, db_now(rdb), row.run_at)


def test_the_zone_suffix_is_honoured(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron="0 9 * * * America/New_York")
    work(rdb, registry(calls))
    run_at = as_dt(cols(rdb, job_id).run_at)
    assert (run_at.hour, run_at.minute) in ((13, 0), (14, 0)), run_at


def test_cron_zone_names_the_zone_of_expressions_without_one(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron="30 9 * * *")
    work(rdb, registry(calls), cron_zone="Asia/Kolkata")
    run_at = as_dt(cols(rdb, job_id).run_at)
    assert (run_at.hour, run_at.minute) == (4, 0), run_at


@pytest.mark.parametrize("destroy", [True, False])
def test_an_unloadable_cron_row_is_failed_not_rescheduled(rdb: DB, destroy: bool) -> None:
    calls = Calls()
    job_id = rdb.insert(broken_active_job("HelloJob"), attempts=2)
    set_cols(rdb, job_id, cron=YEARLY)
    assert work(rdb, registry(calls), destroy_failed_jobs=destroy) == (0, 1)
    row = cols(rdb, job_id)
    if destroy:
        assert row is None
        return
    assert row.failed_at is not None and row.locked_by is None
    assert row.last_error.startswith("Job failed to load")
    assert row.attempts == 3  # 0.9.0's after-perform step still counts it
    assert calls.runs == []
    assert work(rdb, registry(calls)) == (0, 0), "a failed row is never reserved again"


def test_an_unsupported_cron_is_handed_back_unrun(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron="0 0 -2 * *")  # Fugit runs it; dj_consumer refuses it
    with capture_logs() as logs:
        assert work(rdb, registry(calls))[0] == 0
    row = cols(rdb, job_id)
    assert calls.runs == []
    assert (row.attempts, row.locked_by, row.failed_at, row.cron) == (0, None, None, "0 0 -2 * *")
    assert [e for e in logs if e["event"] == "job.recurring_unsupported"]


def test_a_cron_write_is_fenced_by_locked_by(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=YEARLY)
    work(rdb, registry(calls, lambda j: set_cols(rdb, j.id, locked_by="other worker")))
    row = cols(rdb, job_id)
    assert (row.attempts, row.locked_by) == (0, "other worker")


@pytest.mark.parametrize(("interval", "batch"), [("3600", 1), ("PT1H", 5)])
def test_a_reoccur_row_moves_to_the_next_slot_on_its_grid(rdb: DB, interval: str,
                                                          batch: int) -> None:
    calls = Calls()
    now = db_now(rdb).replace(microsecond=0)
    grid = now - timedelta(hours=2, minutes=30)  # late by 2.5 intervals: one run, no burst
    job_id = rdb.insert(obj("Tick"), attempts=2, run_at=grid)
    set_cols(rdb, job_id, reoccur_in=interval, last_error="an old error")
    assert work(rdb, registry(calls), reserve_batch=batch) == (1, 0)
    after = db_now(rdb)
    row = cols(rdb, job_id)
    assert calls.runs == [job_id]
    assert as_dt(row.run_at) == grid + timedelta(hours=3)
    assert (row.attempts, row.last_error, row.locked_by, row.locked_at) == (0, None, None, None)
    assert now - timedelta(seconds=1) <= as_dt(row.last_run_at) <= after


def test_a_failed_reoccur_run_follows_the_normal_retry(rdb: DB) -> None:
    calls = Calls()
    job_id = rdb.insert(obj("Boom"), run_at=db_now(rdb).replace(microsecond=0))
    set_cols(rdb, job_id, reoccur_in="3600")
    work(rdb, registry(calls))
    row = cols(rdb, job_id)
    assert (row.attempts, row.last_run_at, row.failed_at) == (1, None, None)
    assert row.last_error.startswith("ValueError: boom\n")
    assert as_dt(row.run_at) < db_now(rdb) + timedelta(seconds=30)  # 5 + 1**4 seconds


@pytest.mark.parametrize("batch", [1, 5])
def test_plain_rows_of_a_recurring_table_are_deleted_as_ever(rdb: DB, batch: int) -> None:
    calls = Calls()
    ids = [rdb.insert(obj("Tick")), rdb.insert(obj("Tick"))]
    cron_id = rdb.insert(obj("Tick"))
    set_cols(rdb, cron_id, cron=YEARLY)
    assert work(rdb, registry(calls), reserve_batch=batch) == (3, 0)
    assert cols(rdb, cron_id).attempts == 1
    assert [cols(rdb, i) for i in ids] == [None, None]


def test_detect_reports_the_conventions(db: DB) -> None:
    store = Store(Config.from_mapping(db.config()))
    try:
        assert detect(store).describe() == "none"
        add_recurring_columns(db.engine, db.table, reoccur=False)
        assert detect(store).describe() == "cron (delayed_cron_job)"
        add_recurring_columns(db.engine, db.table)
        assert detect(store).cron and detect(store).reoccur
    finally:
        store.close()


def test_workers_racing_for_a_cron_row_run_each_slot_once(rdb: DB) -> None:
    """Three slots in two workers poll one every-second cron row for a few seconds: each
    run is a new slot (the reserve locks it, the outcome write is fenced by locked_by)."""
    slots: list[datetime] = []
    lock = threading.Lock()
    reg = Registry()

    @reg.run("Tick")
    def tick(j: Job) -> None:
        with lock:
            slots.append(as_dt(j.run_at))
        time.sleep(0.05)

    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=EVERY_SECOND)
    workers = [make_worker(rdb.config(worker_id=f"w{i}", concurrency=c, sleep_delay=0.02), reg)
               for i, c in ((1, 2), (2, 1))]
    threads = [threading.Thread(target=w.start, daemon=True) for w in workers]
    for t in threads:
        t.start()
    time.sleep(4.5)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(30)
    for w in workers:
        w.close()
    assert len(slots) >= 2, slots
    assert slots == sorted(set(slots)), f"a slot ran twice: {slots}"
    row = cols(rdb, job_id)
    assert (row.attempts, row.locked_by) == (len(slots), None)


@pytest.mark.parametrize("fault", ["lost_reply", "driver_bug"])
def test_a_fault_in_the_cron_write_never_writes_it_twice_nor_deletes_the_row(
        rdb: DB, fault: str) -> None:
    """A reply lost after the cron UPDATE (it committed): the retried transaction finds the
    row no longer ours and writes nothing more. A one-off driver error before it: tried
    again, the row is kept (a success of a claimed job is never sent to a plain DELETE)."""
    from tests.faults import LOSE_REPLY, Faults

    calls = Calls()
    job_id = rdb.insert(obj("Tick"))
    set_cols(rdb, job_id, cron=YEARLY)
    w = make_worker(rdb.config(exit_on_complete=True), registry(calls))
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    rule = faults.add(r"SET attempts = attempts \+ 1",
                      LOSE_REPLY if fault == "lost_reply" else RuntimeError("a driver bug"))
    thread = threading.Thread(target=w.start, daemon=True)
    thread.start()
    thread.join(30)
    w.stop()
    thread.join(10)
    w.close()
    assert rule.fired == 1
    row = cols(rdb, job_id)
    assert calls.runs == [job_id], "ran once"
    assert row is not None, "the cron row was deleted"
    assert (row.attempts, row.locked_by, row.cron) == (1, None, YEARLY)
