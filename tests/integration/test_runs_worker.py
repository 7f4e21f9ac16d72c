"""Run records written by the worker (docs/runs.md "Job runs"): running at start, the final state in
the outcome's transaction, the handler's return value as result — on all three databases."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.errors import FatalError
from dj_consumer.runs.records import Run
from tests.conftest import DB, make_db
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
        seen.append(wait_for_record(rdb, j.id))
        return {"rows": 3, "url": "s3://r/7", "ok": True}

    job_id = rdb.db.insert(obj("ReportJob", year=2026, run_key="report-2026", owner_id=42),
                           queue="reports")
    assert work(rdb, reg, run_progress_interval=0.1) == (1, 0)
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


def wait_for_record(rdb: RunsDB, job_id: int, timeout: float = 5.0) -> Run:
    """The `running` record, written by the worker's background writer within
    run_progress_interval of the start."""
    deadline = time.monotonic() + timeout
    while (run := rdb.record(job_id)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run is not None, "no running record"
    return run  # type: ignore[no-any-return]


def test_a_job_shorter_than_the_interval_gets_its_record_in_one_write(rdb: RunsDB) -> None:
    """The `running` write had not gone out when the job ended: the final write carries it
    (run_key, owner_id, locked_by, started_at), in the outcome's transaction."""
    reg = Registry()

    @reg.run("Quick")
    def quick(j: Job) -> int:
        return 1

    ids = [rdb.db.insert(obj("Quick", run_key=f"q{i}", owner_id=i)) for i in range(3)]
    assert work(rdb, reg, run_progress_interval=30) == (3, 0)
    for i, job_id in enumerate(ids):
        run = rdb.record(job_id)
        assert (run.state, run.result, run.run_key, run.owner_id) == ("succeeded", 1, f"q{i}",
                                                                      str(i))
        assert run.locked_by is None and run.started_at is not None
        assert run.finished_at is not None and run.started_at <= run.finished_at


def test_a_success_whose_lock_was_lost_writes_no_final_record(rdb: RunsDB) -> None:
    """Fenced like the outcome: another worker holds the row now, so neither the DELETE nor
    the record's final state is written (the one-round-trip script on MySQL included)."""
    reg = Registry()

    @reg.run("Taken")
    def taken(j: Job) -> None:
        rdb.db.update(j.id, locked_by="other host:x pid:9")

    job_id = rdb.db.insert(obj("Taken", run_key="t1"))
    assert work(rdb, reg, run_progress_interval=30) == (1, 0)
    assert rdb.db.row(job_id).locked_by == "other host:x pid:9"
    assert rdb.record(job_id) is None


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
        run = rdb.record(job_id)  # its running write, if it had gone out, and nothing final
        assert run is None or run.state == "running"


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


# -- progress ----------------------------------------------------------------------------------


def test_progress_is_throttled_and_the_handler_never_waits_on_the_database(rdb: RunsDB) -> None:
    """1,000 reports while another transaction holds the record's row: the handler does not
    wait, a few writes reach the table, and the last report is in the final record."""
    took: list[float] = []
    mid: list[Run] = []
    reg = Registry()

    @reg.run("Count")
    def count(j: Job) -> None:
        wait_for_record(rdb, j.id)  # its running write is out: the record's row can be held
        with blocking(rdb, j.id):
            t0 = time.perf_counter()
            for i in range(1000):
                j.report_progress(i, 1000, "scan")
            took.append(time.perf_counter() - t0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            run = rdb.record(j.id)
            if run is not None and run.progress_current == 999:
                mid.append(run)
                break
            time.sleep(0.05)
        j.report_progress(1000, stage="done")  # held back: the final write carries it

    job_id = rdb.db.insert(obj("Count"))
    w = make_worker(rdb.config(run_progress_interval=0.2), reg)
    assert w.runs is None
    writes: list[int] = []
    try:
        w._setup()
        assert w.runs is not None
        inner = w.runs.writer._write
        w.runs.writer._write = lambda i, p: (writes.append(p[0]), inner(i, p))  # type: ignore[method-assign,func-returns-value]
        assert w.work_off(1) == (1, 0)
        late = w.runs._write_progress
    finally:
        w.close()
    assert took[0] < 0.5, took
    assert mid and (mid[0].state, mid[0].progress_total, mid[0].progress_stage) == \
        ("running", 1000, "scan")
    assert 1 <= len(writes) <= 4, writes
    run = rdb.record(job_id)
    assert (run.state, run.progress_current, run.progress_total, run.progress_stage) == \
        ("succeeded", 1000, 1000, "done")
    late(job_id, (3, 10, "late"))  # a progress write after the final one changes nothing
    assert (rdb.record(job_id).progress_current, rdb.record(job_id).state) == (1000, "succeeded")


class blocking:
    """Hold the run record's row (or, on SQLite, the write lock) for a moment, then let go."""

    def __init__(self, rdb: RunsDB, job_id: int) -> None:
        self.rdb, self.job_id = rdb, job_id

    def __enter__(self) -> None:
        self.conn = self.rdb.engine.connect()
        if self.rdb.db.backend == "sqlite":
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            self.conn.execute(sa.text(f"SELECT job_id FROM {self.rdb.runs} WHERE job_id = :i "
                                      "FOR UPDATE"), {"i": self.job_id})

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the writer is waiting on us by now
        if self.rdb.db.backend == "sqlite":
            self.conn.exec_driver_sql("COMMIT")
        else:
            self.conn.commit()
        self.conn.close()


# -- cancel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["api", "rails"])
def test_a_running_job_sees_cancelled_within_a_heartbeat(rdb: RunsDB, how: str) -> None:
    seen: dict[str, Any] = {}
    started = threading.Event()
    reg = Registry()

    @reg.run("Long")
    def long(j: Job) -> None:
        started.set()
        t0 = time.monotonic()
        while not j.cancelled and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        seen.update(cancelled=bool(j.cancelled), timed_out=bool(j.timed_out),
                    after=time.monotonic() - seen["asked"])

    job_id = rdb.db.insert(obj("Long"), attempts=2)

    def ask() -> None:
        assert started.wait(10)
        seen["asked"] = time.monotonic()
        if how == "api":
            from dj_consumer import runs

            assert runs.cancel(job_id, config=rdb.config()).outcome == "requested"
        else:  # what the README tells a Rails app to write
            rdb.set(job_id, cancel_requested_at=wait_for_record(rdb, job_id).started_at)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        assert work(rdb, reg, 1, heartbeat_interval=0.3) == (0, 1)
    finally:
        asker.join()
    assert seen["cancelled"] and seen["timed_out"]
    assert seen["after"] < 0.3 + 1.0, seen  # one heartbeat, and a slow CI's slack
    assert rdb.db.row(job_id) is None
    run = rdb.record(job_id)
    assert (run.state, run.attempts, run.error_message) == ("cancelled", 2, "cancelled")
    assert run.finished_at is not None and run.cancel_requested_at is not None


def test_a_cancelled_async_handler_is_stopped_and_recorded_cancelled(rdb: RunsDB) -> None:
    import asyncio

    reg = Registry()

    @reg.run("Sleeper")
    async def sleeper(j: Job) -> None:
        rdb.set(j.id, cancel_requested_at=wait_for_record(rdb, j.id).started_at)
        await asyncio.sleep(20)

    job_id = rdb.db.insert(obj("Sleeper"))
    t0 = time.monotonic()
    assert work(rdb, reg, 1, heartbeat_interval=0.3) == (0, 1)
    assert time.monotonic() - t0 < 5
    assert rdb.db.row(job_id) is None
    assert (rdb.record(job_id).state, rdb.record(job_id).attempts) == ("cancelled", 0)


# -- retention ---------------------------------------------------------------------------------


def test_the_worker_prunes_records_older_than_run_retention(rdb: RunsDB) -> None:
    from datetime import timedelta

    from dj_consumer.clock import SystemClock
    from dj_consumer.runs import tracking

    now = SystemClock().now()
    old, young = now - timedelta(hours=3), now - timedelta(minutes=30)
    with rdb.engine.begin() as conn:
        for i in range(1, 1201):  # more than one prune batch (500)
            rdb.store.finish(conn, 100_000 + i, "succeeded", attempts=0, now=old, name="A")
        rdb.store.finish(conn, 99_999, "failed", attempts=3, now=young, name="A")
    reg = Registry()

    @reg.run("Slow")
    def slow(j: Job) -> None:
        time.sleep(0.8)  # a few heartbeats while it runs

    rdb.db.insert(obj("Slow"))
    assert tracking.PRUNE_EVERY >= 600  # pruning is rare; the first beat after start does it
    assert work(rdb, reg, 1, run_retention=3600, heartbeat_interval=0.2) == (1, 0)
    with rdb.engine.connect() as conn:
        left = conn.execute(sa.text(f"SELECT job_id FROM {rdb.runs} ORDER BY job_id")).scalars()
        assert sorted(left) == sorted([99_999, *[r.job_id for r in
                                                 rdb.store.find(conn, name="Slow")]])


def test_on_mariadb_a_successs_record_rides_with_the_next_reserve(mariadb_db: DB) -> None:
    """One commit per job, as without run records: the DELETE and the record's writes travel
    in the next reserve's script (the last one's in the reserve that finds nothing left)."""
    with runs_tables(mariadb_db) as rdb:
        reg = Registry()

        @reg.run("Ok")
        def ok(j: Job) -> int:
            return j.id

        ids = [rdb.db.insert(obj("Ok", run_key=f"k{i}")) for i in range(5)]
        w = make_worker(rdb.config(run_progress_interval=30), reg)
        alone: list[int] = []
        try:
            w._setup()
            assert w.store.folds_extras
            delete_with = w.store.delete_with
            w.store.delete_with = lambda i, me, extra: (alone.append(i),  # type: ignore[method-assign]
                                                        delete_with(i, me, extra))[1]
            assert w.work_off(10) == (5, 0)
        finally:
            w.close()
        assert alone == []
        for i, job_id in enumerate(ids):
            run = rdb.record(job_id)
            assert (run.state, run.result, run.run_key) == ("succeeded", job_id, f"k{i}")
        assert rdb.db.count() == 0


def test_a_success_in_hand_at_a_stop_is_written_with_its_record(mariadb_db: DB) -> None:
    """No next reserve to ride with (the worker stops): the slot's last success and its
    record go together, in one script of their own."""
    with runs_tables(mariadb_db) as rdb:
        reg = Registry()
        holder: list[Any] = []

        @reg.run("Ok")
        def ok(j: Job) -> str:
            holder[0].stop()  # no reserve after this one
            return "done"

        job_id = rdb.db.insert(obj("Ok"))
        w = make_worker(rdb.config(run_progress_interval=30), reg)
        holder.append(w)
        alone: list[int] = []
        try:
            w._setup()
            delete_with = w.store.delete_with
            w.store.delete_with = lambda i, me, extra: (alone.append(i),  # type: ignore[method-assign]
                                                        delete_with(i, me, extra))[1]
            w.start()
        finally:
            w.close()
        assert alone == [job_id]
        assert rdb.db.row(job_id) is None
        assert (rdb.record(job_id).state, rdb.record(job_id).result) == ("succeeded", "done")


def test_on_postgresql_a_success_and_its_record_are_one_statement(tmp_path: Path) -> None:
    """PostgreSQL: the DELETE and the record's final write (with its running fields, when
    those had not gone out) in one autocommitted statement per success."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(contextlib.contextmanager(make_db)("postgresql", tmp_path))
        rdb = stack.enter_context(runs_tables(pg))
        reg = Registry()

        @reg.run("Ok")
        def ok(j: Job) -> dict[str, int]:
            return {"id": j.id}

        ids = [rdb.db.insert(obj("Ok", run_key=f"p{i}", owner_id=i)) for i in range(4)]
        w = make_worker(rdb.config(run_progress_interval=30), reg)
        sent: list[int] = []
        try:
            w._setup()
            one = w.outcomes._one
            w.outcomes._one = lambda stmt, params: (sent.append(params["id"]),  # type: ignore[method-assign]
                                                    one(stmt, params))[1]
            assert w.work_off(10) == (4, 0)
        finally:
            w.close()
        assert sent == ids
        for i, job_id in enumerate(ids):
            run = rdb.record(job_id)
            assert (run.state, run.result, run.run_key, run.owner_id, run.locked_by) == \
                ("succeeded", {"id": job_id}, f"p{i}", str(i), None)
            assert run.started_at is not None and run.finished_at is not None
        assert rdb.db.count() == 0


def test_a_records_earlier_attempt_carries_on_and_a_reused_ids_record_is_reset(
        rdb: RunsDB) -> None:
    """The success's one write (running fields and final state together): a record of an
    earlier attempt of the same job keeps its progress and keys; a final record left by an
    earlier job with the same id (ids reused, an operator's retry) starts over."""
    from dj_consumer.clock import SystemClock

    reg = Registry()
    tries: list[int] = []

    @reg.run("Twice")
    def twice(j: Job) -> None:
        tries.append(j.id)
        if len(tries) == 1:
            j.report_progress(5, 10, "half")
            raise RuntimeError("first try")

    job_id = rdb.db.insert(obj("Twice", run_key="t-1"))
    assert work(rdb, reg, 1, run_progress_interval=30) == (0, 1)
    assert (rdb.record(job_id).state, rdb.record(job_id).progress_current) == ("rescheduled", 5)
    rdb.db.update(job_id, run_at=rdb.db.row(job_id).created_at)
    assert work(rdb, reg, 1, run_progress_interval=30) == (1, 0)
    run = rdb.record(job_id)
    assert (run.state, run.attempts, run.progress_current, run.progress_stage, run.run_key,
            run.error_class, run.error_message) == ("succeeded", 1, 5, "half", "t-1", None, None)

    reused = rdb.db.insert(obj("Twice", run_key="t-2"))
    now = SystemClock().now()
    with rdb.engine.begin() as conn:
        rdb.store.finish(conn, reused, "failed", attempts=3, now=now, name="Old", error="old")
    rdb.set(reused, progress_current=9, run_key="old", cancel_requested_at=now)
    assert work(rdb, reg, 1, run_progress_interval=30) == (1, 0)
    run = rdb.record(reused)
    assert (run.state, run.name, run.attempts, run.progress_current, run.run_key,
            run.cancel_requested_at, run.error_message) == \
        ("succeeded", "Twice", 0, None, "t-2", None, None)


def test_an_earlier_jobs_cancel_request_does_not_stop_a_new_job_with_its_id(
        rdb: RunsDB) -> None:
    """Failed before the fix: the heartbeat read cancel_requested_at of a final record left
    by an earlier job with the same id, and cancelled the new one."""
    from dj_consumer.clock import SystemClock

    reg = Registry()
    seen: list[bool] = []

    @reg.run("Slow")
    def slow(j: Job) -> None:
        time.sleep(0.8)  # a few heartbeats, before its running write goes out
        seen.append(bool(j.cancelled))

    job_id = rdb.db.insert(obj("Slow"))
    now = SystemClock().now()
    with rdb.engine.begin() as conn:
        rdb.store.finish(conn, job_id, "cancelled", attempts=0, now=now, name="Old")
    rdb.set(job_id, cancel_requested_at=now)
    assert work(rdb, reg, 1, heartbeat_interval=0.2, run_progress_interval=30) == (1, 0)
    assert seen == [False]
    assert (rdb.record(job_id).state, rdb.record(job_id).cancel_requested_at) == \
        ("succeeded", None)
