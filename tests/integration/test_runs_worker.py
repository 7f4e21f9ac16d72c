"""Run records written by the worker (README "Job runs"): running at start, the final state in
the outcome's transaction, the handler's return value as result — on all three databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.errors import FatalError
from dj_consumer.runs.records import Run
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, runs_tables
from tests.integration.test_protocol import obj


@pytest.fixture
def rdb(db: DB) -> Iterator[RunsDB]:
    with runs_tables(db) as r:
        yield r


def work(rdb: RunsDB, registry: Registry, n: int = 10, **cfg: Any) -> tuple[int, int]:
    w = make_worker(rdb.config(**cfg), registry)
    try:
        return w.work_off(n)
    finally:
        w.close()


def test_a_success_is_running_while_it_runs_then_succeeded_with_its_result(rdb: RunsDB) -> None:
    seen: list[Run] = []
    reg = Registry()

    @reg.run("ReportJob")
    def report(j: Job) -> Any:
        seen.append(rdb.record(j.id))
        return {"rows": 3, "url": "s3://r/7", "ok": True}

    job_id = rdb.db.insert(obj("ReportJob", year=2026, run_key="report-2026", owner_id=42),
                           queue="reports")
    assert work(rdb, reg) == (1, 0)
    running = seen[0]
    assert (running.state, running.name, running.queue, running.run_key, running.owner_id) == \
        ("running", "ReportJob", "reports", "report-2026", "42")
    assert running.locked_by is not None and running.locked_by.startswith("pytest ")
    assert running.started_at is not None and running.finished_at is None
    assert rdb.db.row(job_id) is None
    done = rdb.record(job_id)
    assert (done.state, done.attempts, done.result, done.locked_by) == \
        ("succeeded", 0, {"rows": 3, "url": "s3://r/7", "ok": True}, None)
    assert done.finished_at is not None and done.started_at == running.started_at
    assert (done.error_class, done.error_message) == (None, None)


def test_failed_attempts_say_rescheduled_then_failed_with_class_and_message(rdb: RunsDB) -> None:
    reg = Registry()

    @reg.run("Bad", max_attempts=2)
    def bad(j: Job) -> None:
        raise KeyError("customer 7")

    job_id = rdb.db.insert(obj("Bad"))
    assert work(rdb, reg) == (0, 1)
    run = rdb.record(job_id)
    assert (run.state, run.attempts, run.error_class, run.error_message, run.finished_at) == \
        ("rescheduled", 1, "KeyError", "'customer 7'", None)
    rdb.db.update(job_id, run_at=rdb.db.row(job_id).created_at)  # ready again
    assert work(rdb, reg) == (0, 1)
    run = rdb.record(job_id)
    assert (run.state, run.attempts, run.error_class) == ("failed", 2, "KeyError")
    assert run.finished_at is not None
    assert rdb.db.row(job_id).failed_at is not None


def test_a_result_json_cannot_hold_fails_the_attempt_saying_why(rdb: RunsDB) -> None:
    reg = Registry()

    @reg.run("Odd")
    def odd(j: Job) -> Any:
        return {"when": object()}

    job_id = rdb.db.insert(obj("Odd"))
    assert work(rdb, reg) == (0, 1)
    row = rdb.db.row(job_id)
    assert row.attempts == 1 and "cannot be its result" in row.last_error
    run = rdb.record(job_id)
    assert (run.state, run.error_class) == ("rescheduled", "dj_consumer.runs.records.ResultError")
    assert "return what JSON holds" in run.error_message


def test_without_the_runs_table_nothing_changes(db: DB) -> None:
    """No participant, no attender: the success's DELETE still rides with the next reserve,
    and a return value JSON cannot hold is nobody's business."""
    reg = Registry()

    @reg.run("Odd")
    def odd(j: Job) -> Any:
        return object()

    db.insert(obj("Odd"))
    w = make_worker(db.config(), reg)
    try:
        assert w.work_off(5) == (1, 0)
        assert w.runs is None and w.recorder.outcomes.participants == []
        assert w.recorder.outcomes.attenders == []
    finally:
        w.close()
    assert db.count() == 0


@pytest.mark.parametrize("batch", [1, 4])
def test_a_reader_never_sees_a_job_gone_without_its_final_record(rdb: RunsDB, batch: int) -> None:
    """Rows read first, records after: a job missing from the first read must have its final
    record in the second (the record is written in the DELETE's transaction)."""
    reg = Registry()

    @reg.run("Ok")
    def ok(j: Job) -> int:
        return j.id

    ids = [rdb.db.insert(obj("Ok")) for _ in range(12)]
    runs_t = sa.Table(rdb.runs, sa.MetaData(), autoload_with=rdb.engine)
    stop = threading.Event()
    broken: list[tuple[int, Any]] = []

    def read() -> None:
        with rdb.engine.connect() as conn:
            while not stop.is_set():
                present = {r[0] for r in conn.execute(sa.select(rdb.db.t.c.id))}
                conn.commit()
                states = dict(conn.execute(sa.select(runs_t.c.job_id, runs_t.c.state)).all())
                conn.commit()
                broken.extend((i, states.get(i)) for i in ids
                              if i not in present and states.get(i) != "succeeded")
                time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert work(rdb, reg, 20, reserve_batch=batch) == (12, 0)
    finally:
        stop.set()
        reader.join()
    assert broken == []
    assert [rdb.record(i).result for i in ids] == ids


def test_a_final_record_the_database_refuses_takes_the_outcome_with_it(server_db: DB) -> None:
    """One transaction: when the record's write fails, the job's DELETE is rolled back (the
    success stays locked, as for a refused DELETE, and the worker stops)."""
    with runs_tables(server_db) as rdb:
        with rdb.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {rdb.runs} ADD CONSTRAINT {rdb.runs}_no "
                                 "CHECK (state <> 'succeeded')"))
        reg = Registry()

        @reg.run("Ok")
        def ok(j: Job) -> None:
            pass

        job_id = rdb.db.insert(obj("Ok"))
        with pytest.raises(FatalError):
            work(rdb, reg, 1)
        row = rdb.db.row(job_id)
        assert row is not None and row.locked_by is not None
        assert rdb.record(job_id).state == "running"


def test_an_interrupted_job_says_interrupted_with_attempts_unchanged(rdb: RunsDB) -> None:
    started, release = threading.Event(), threading.Event()
    reg = Registry()

    @reg.run("Slow")
    def slow(j: Job) -> None:
        started.set()
        release.wait(10)

    job_id = rdb.db.insert(obj("Slow"))
    w = make_worker(rdb.config(shutdown_timeout=0.2), reg)
    thread = threading.Thread(target=w.start)
    thread.start()
    try:
        assert started.wait(10)
        w.stop()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        release.set()
        w.close()
    row = rdb.db.row(job_id)
    assert row.locked_by is None and row.attempts == 0
    run = rdb.record(job_id)
    assert (run.state, run.attempts, run.finished_at) == ("interrupted", 0, None)
    assert run.error_message.startswith("Interrupted: worker")
