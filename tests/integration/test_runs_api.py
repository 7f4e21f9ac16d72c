"""dj_consumer.runs without a worker: get, find, wait, cancel — on all three databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import dj_consumer
from dj_consumer import runs
from dj_consumer.clock import FakeClock, SystemClock
from dj_consumer.errors import ConfigError
from dj_consumer.runs.records import result_json
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, job, runs_tables

HANDLER = "--- !ruby/object:ReportJob\nyear: 2026\n"


@pytest.fixture
def rdb(db: DB) -> Iterator[RunsDB]:
    with runs_tables(db) as r:
        yield r


def now() -> Any:
    return SystemClock().now().replace(microsecond=0)


def finish_later(rdb: RunsDB, job_id: int, delay: float, state: str = "succeeded") -> threading.Thread:
    def run() -> None:
        threading.Event().wait(delay)
        with rdb.engine.begin() as conn:
            rdb.store.finish(conn, job_id, state, attempts=0, now=now(),
                             result=result_json({"rows": 3}))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_get_and_find_through_the_module_functions(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(5, {"run_key": "r5", "owner_id": 9}), now())
    cfg = rdb.config()
    assert runs.get(5, config=cfg).state == "running"
    assert runs.get(6, config=cfg) is None
    assert [r.job_id for r in runs.find(owner_id=9, config=cfg)] == [5]
    assert runs.client(cfg) is runs.client(cfg)  # one client per database, kept


def test_wait_returns_the_final_record_once_it_is_written(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER)
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(job_id), now())
    thread = finish_later(rdb, job_id, 0.3)
    try:
        run = runs.wait(job_id, timeout=30, config=rdb.config())
    finally:
        thread.join()
    assert (run.state, run.result) == ("succeeded", {"rows": 3})


def test_wait_times_out_with_the_state_and_knows_a_missing_job(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER)
    clock = FakeClock()
    with runs.Runs(rdb.config(), clock=clock) as client:
        with pytest.raises(runs.RunTimeout, match=rf"job {job_id} did not finish within 5 s "
                                                  r"\(not started yet\)"):
            client.wait(job_id, timeout=5)
        with rdb.engine.begin() as conn:
            rdb.store.start(conn, job(job_id), now())
            rdb.store.progress(conn, job_id, 3, 10, "upload", now=now())
        with pytest.raises(runs.RunTimeout, match=r"state: running, progress 3/10 \(upload\)"):
            client.wait(job_id, timeout=5)
        with pytest.raises(runs.RunNotFound, match="no job 999999 and no run record"):
            client.wait(999999, timeout=5)


def test_without_the_table_reads_say_how_to_make_it(db: DB) -> None:
    with pytest.raises(ConfigError, match=r"no run records table .*dj-consumer schema --create --runs"):
        runs.get(1, config=db.config(runs_table=f"{db.table}_none"))


def test_cancel_deletes_a_waiting_job_and_records_it(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER)
    done = dj_consumer.cancel(job_id, config=rdb.config())
    assert (done.outcome, done.done) == ("deleted", True)
    assert rdb.db.row(job_id) is None
    run = rdb.record(job_id)
    assert (run.state, run.name, run.queue, run.error_message) == \
        ("cancelled", "ReportJob", None, "cancelled")
    assert run.finished_at is not None
    again = runs.cancel(job_id, config=rdb.config())
    assert again.outcome == "finished" and "already cancelled" in again.message


def test_cancel_keep_fails_the_job_with_attempts_unchanged(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER, attempts=2, queue="mail")
    assert runs.cancel(job_id, keep=True, config=rdb.config()).outcome == "failed"
    row = rdb.db.row(job_id)
    assert (row.last_error, row.attempts, row.locked_by) == ("cancelled", 2, None)
    assert row.failed_at is not None
    assert (rdb.record(job_id).state, rdb.record(job_id).attempts) == ("cancelled", 2)
    assert runs.cancel(job_id, config=rdb.config()).outcome == "already_failed"


def test_cancel_of_a_running_job_asks_its_worker(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER, locked_by="py host:h pid:1", locked_at=now())
    done = runs.cancel(job_id, config=rdb.config())
    assert done.outcome == "requested" and "py host:h pid:1" in done.message
    assert rdb.db.row(job_id).locked_by == "py host:h pid:1"
    run = rdb.record(job_id)
    assert run.state == "running" and run.cancel_requested_at is not None
    with rdb.engine.connect() as conn:
        assert rdb.store.cancel_requested(conn, [job_id]) == {job_id}


def test_a_lock_older_than_max_run_time_is_no_worker(rdb: RunsDB) -> None:
    job_id = rdb.db.insert(HANDLER, locked_by="py host:h pid:1",
                           locked_at=now() - timedelta(hours=5))
    assert runs.cancel(job_id, config=rdb.config()).outcome == "deleted"
    young = rdb.db.insert(HANDLER, locked_by="py host:h pid:1",
                          locked_at=now() - timedelta(seconds=30))
    assert runs.cancel(young, config=rdb.config(max_run_time=20)).outcome == "deleted"


def test_cancel_without_the_runs_table(db: DB) -> None:
    cfg = db.config(runs_table=f"{db.table}_none")
    waiting = db.insert(HANDLER)
    running = db.insert(HANDLER, locked_by="py host:h pid:1", locked_at=now())
    assert runs.cancel(waiting, config=cfg).outcome == "deleted"
    done = runs.cancel(running, config=cfg)
    assert (done.outcome, done.done) == ("running_untracked", False)
    assert "needs the run records table" in done.message
    assert db.row(running) is not None
    assert runs.cancel(424242, config=cfg).outcome == "missing"


def test_cancel_on_a_table_without_locked_by_is_one_line_that_says_what_to_do(db: DB) -> None:
    job_id = db.insert(HANDLER)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} DROP COLUMN locked_by"))
    with pytest.raises(ConfigError) as caught:
        runs.cancel(job_id, config=db.config(runs_table=f"{db.table}_none"))
    message = str(caught.value)
    assert f"table '{db.table}' has no column 'locked_by'" in message
    assert f"add_column :{db.table}, :locked_by, :string" in message
    assert "\n" not in message
    with db.engine.connect() as conn:  # nothing was touched
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {db.table}")).scalar() == 1


def test_sqlite_a_job_locked_between_the_look_and_the_delete_is_kept(sqlite_db: DB) -> None:
    """SQLite has no FOR UPDATE: the fence in the DELETE's WHERE is what keeps the job."""
    with runs_tables(sqlite_db) as rdb:
        job_id = sqlite_db.insert(HANDLER)
        client = runs.Runs(rdb.config())

        def worker_locks(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().startswith(f"DELETE FROM {sqlite_db.table}") and not fired:
                fired.append(1)
                sqlite_db.update(job_id, locked_by="py host:w pid:2", locked_at=now())

        fired: list[int] = []
        sa.event.listen(client.engine, "before_cursor_execute", worker_locks)
        try:
            done = client.cancel(job_id)
        finally:
            client.close()
        assert fired and done.outcome == "requested"
        assert sqlite_db.row(job_id).locked_by == "py host:w pid:2"


def test_server_cancel_waits_for_a_worker_taking_the_row_and_leaves_it(server_db: DB) -> None:
    """MariaDB/PostgreSQL: the row is read FOR UPDATE; a worker's uncommitted lock makes the
    cancel wait, and once it commits the job is the worker's: the cancel becomes a request."""
    with runs_tables(server_db) as rdb:
        job_id = server_db.insert(HANDLER)
        t = server_db.t
        worker = server_db.engine.connect()
        tx = worker.begin()
        worker.execute(sa.update(t).where(t.c.id == job_id)
                       .values(locked_by="py host:w pid:2", locked_at=now()))
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(
            runs.cancel(job_id, config=rdb.config())))
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "cancel must wait for the row lock"
        tx.commit()
        worker.close()
        thread.join(30)
        assert result and result[0].outcome == "requested"
        assert server_db.row(job_id).locked_by == "py host:w pid:2"
