"""RunsStore's statements on SQLite, MariaDB and PostgreSQL: what the worker will call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dj_consumer.errors import ConfigError
from dj_consumer.runs import schema
from dj_consumer.runs.records import result_json
from dj_consumer.runs.store import detect
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, job, runs_tables

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def rdb(db: DB) -> Iterator[RunsDB]:
    with runs_tables(db) as r:
        yield r


def test_detect_finds_nothing_without_the_table_and_names_a_missing_column(db: DB) -> None:
    assert detect(db.engine, runs_table=f"{db.table}_none", table_name=db.table) is None
    name = f"{db.table}_jr"
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (job_id BIGINT PRIMARY KEY, state VARCHAR(16))"))
    try:
        with pytest.raises(ConfigError, match=rf"table '{name}' has no column 'name'"):
            detect(db.engine, runs_table=name, table_name=db.table)
    finally:
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {name}"))


def test_start_writes_a_running_record_with_the_payload_keys(rdb: RunsDB) -> None:
    payload = {"run_key": "report-7", "owner_id": 42, "batch_id": "b1", "batch_index": 3}
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(7, payload, attempts=2), T0)
    run = rdb.record(7)
    assert (run.state, run.name, run.queue, run.attempts, run.locked_by) == \
        ("running", "ReportJob", "reports", 2, "py host:h pid:1")
    assert (run.run_key, run.owner_id, run.batch_id, run.batch_index) == ("report-7", "42", "b1", 3)
    assert run.started_at == T0 and run.finished_at is None and not run.finished


def test_active_job_keys_come_from_its_last_hash_argument(rdb: RunsDB) -> None:
    payload = {"job_class": "ReportJob", "arguments": [1, {"run_key": "r", "owner_id": "u9"}]}
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(8, payload), T0)
    assert (rdb.record(8).run_key, rdb.record(8).owner_id) == ("r", "u9")


def test_a_retry_keeps_the_cancel_request_and_keys_a_new_run_does_not(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(9, {"run_key": "k"}), T0)
        rdb.store.progress(conn, 9, 3, 10, "fetch", now=T0)
        rdb.store.finish(conn, 9, "rescheduled", attempts=1, now=T0, error="boom\nTraceback…")
    rdb.set(9, cancel_requested_at=T0)
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(9, {}, attempts=1), T0 + timedelta(seconds=5))
    run = rdb.record(9)
    assert (run.state, run.run_key, run.cancel_requested_at, run.progress_current) == \
        ("running", "k", T0, 3)
    assert run.error_message is None and run.attempts == 1
    with rdb.engine.begin() as conn:  # finished for good: the next start is someone else's run
        rdb.store.finish(conn, 9, "cancelled", attempts=1, now=T0)
        rdb.store.start(conn, job(9, {}, attempts=0), T0 + timedelta(seconds=9))
    run = rdb.record(9)
    assert (run.state, run.run_key, run.cancel_requested_at, run.progress_current) == \
        ("running", None, None, None)


def test_progress_is_one_update_and_keeps_what_is_not_given(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        assert not rdb.store.progress(conn, 11, 1, now=T0)
        rdb.store.start(conn, job(11), T0)
        assert rdb.store.progress(conn, 11, 1, 4, "download", now=T0)
        assert rdb.store.progress(conn, 11, 2, now=T0 + timedelta(seconds=1))
    run = rdb.record(11)
    assert (run.progress_current, run.progress_total, run.progress_stage) == (2, 4, "download")
    with rdb.engine.begin() as conn:
        rdb.store.finish(conn, 11, "succeeded", attempts=0, now=T0, result=result_json({"n": 2}))
        assert not rdb.store.progress(conn, 11, 3, now=T0)  # late: the record is final
    assert rdb.record(11).progress_current == 2


def test_finish_lands_with_the_callers_transaction_or_not_at_all(rdb: RunsDB) -> None:
    db = rdb.db
    job_id = db.insert("--- !ruby/object:ReportJob {}\n", locked_by="me", locked_at=T0)
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(job_id), T0)
    conn = rdb.engine.connect()
    try:
        with conn.begin() as tx:
            conn.execute(sa.delete(db.t).where(db.t.c.id == job_id))
            rdb.store.finish(conn, job_id, "succeeded", attempts=0, now=T0,
                             result=result_json([1, "two"]))
            tx.rollback()
        assert db.row(job_id) is not None and rdb.record(job_id).state == "running"
        with conn.begin():
            conn.execute(sa.delete(db.t).where(db.t.c.id == job_id))
            rdb.store.finish(conn, job_id, "succeeded", attempts=0, now=T0,
                             result=result_json([1, "two"]))
    finally:
        conn.close()
    run = rdb.record(job_id)
    assert db.row(job_id) is None
    assert (run.state, run.result, run.finished_at, run.locked_by) == \
        ("succeeded", [1, "two"], T0, None)


def test_finish_creates_a_missing_record_and_keeps_the_error_without_traceback(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        rdb.store.finish(conn, 12, "failed", attempts=25, now=T0, name="ReportJob", queue="q",
                         error=ValueError("bad input"))
        rdb.store.finish(conn, 13, "rescheduled", attempts=1, now=T0, name="ReportJob",
                         error="timeout\nTraceback (most recent call last):\n  File …")
    failed, later = rdb.record(12), rdb.record(13)
    assert (failed.state, failed.name, failed.error_class, failed.error_message, failed.attempts) \
        == ("failed", "ReportJob", "ValueError", "bad input", 25)
    assert failed.finished
    assert (later.state, later.error_message, later.finished_at) == ("rescheduled", "timeout", None)


def test_cancel_requested_reads_a_set_of_ids_in_one_statement(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        for i in (21, 22, 23):
            rdb.store.start(conn, job(i), T0)
    rdb.set(22, cancel_requested_at=T0)
    with rdb.engine.connect() as conn:
        assert rdb.store.cancel_requested(conn, [21, 22, 23, 99]) == {22}
        assert rdb.store.cancel_requested(conn, []) == set()


def test_prune_removes_old_final_and_orphaned_records_in_small_batches(rdb: RunsDB) -> None:
    live = rdb.db.insert("--- !ruby/object:ReportJob {}\n")
    old, young = T0 - timedelta(days=20), T0 - timedelta(days=1)
    with rdb.engine.begin() as conn:
        for i in range(1, 8):  # 7 old successes
            rdb.store.finish(conn, 100 + i, "succeeded", attempts=0, now=old, name="A")
        rdb.store.finish(conn, 200, "failed", attempts=3, now=young, name="A")
        rdb.store.finish(conn, 201, "rescheduled", attempts=1, now=old, name="A")  # job gone
        rdb.store.finish(conn, live, "rescheduled", attempts=1, now=old, name="A")  # job there
    with rdb.engine.connect() as conn:
        removed = rdb.store.prune(conn, now=T0, retention=14 * 86400, batch_size=3)
    assert removed == 8
    with rdb.engine.connect() as conn:
        left = {r.job_id for r in rdb.store.find(conn, limit=50)}
    assert left == {200, live}


def test_find_by_run_key_owner_state_and_name(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(31, {"run_key": "a", "owner_id": 1}), T0)
        rdb.store.start(conn, job(32, {"run_key": "a", "owner_id": 2}, name="Other"), T0)
        rdb.store.finish(conn, 32, "succeeded", attempts=0, now=T0 + timedelta(seconds=1))
        rdb.store.start(conn, job(33, {"owner_id": 1}), T0)
    with rdb.engine.connect() as conn:
        find = rdb.store.find
        assert [r.job_id for r in find(conn, run_key="a")] == [32, 31]
        assert {r.job_id for r in find(conn, owner_id=1)} == {31, 33}
        assert [r.job_id for r in find(conn, run_key="a", state="succeeded")] == [32]
        assert [r.job_id for r in find(conn, name="Other")] == [32]
        with pytest.raises(ConfigError, match="state must be one of"):
            find(conn, state="done")


def test_the_tables_are_created_once_and_kept(db: DB) -> None:
    runs, batches = f"{db.table}_jr", f"{db.table}_jb"
    try:
        assert schema.create(db.engine, runs, batches) == [runs, batches, f"{batches}_parts"]
        schema.create(db.engine, runs, batches)  # again: nothing happens
        insp = sa.inspect(db.engine)
        assert insp.get_pk_constraint(runs)["constrained_columns"] == ["job_id"]
        assert {tuple(i["column_names"]) for i in insp.get_indexes(runs)} >= \
            {("run_key",), ("owner_id",), ("state", "updated_at")}
    finally:
        for table in reversed(schema.tables(runs, batches)):
            table.drop(db.engine, checkfirst=True)
