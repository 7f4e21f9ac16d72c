"""docs/guarantees.md, "Outage outlasting a stop": an outcome that cannot be written because
the database stays away is retried until the stop's grace (shutdown_timeout) runs out, then
given up (job.outcome_unwritten) — start() returns, nothing was written twice, no attempt was
spent, and the job runs again with attempts unchanged."""

from __future__ import annotations

import threading
import time

import pymysql
from structlog.testing import capture_logs

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.faults import Faults
from tests.integration.test_protocol import obj


def lost_connection(db: DB) -> Exception:
    if db.backend == "mariadb":
        return pymysql.err.OperationalError(2013, "Lost connection (injected)")
    import psycopg

    return psycopg.OperationalError("server closed the connection unexpectedly (injected)")


def test_an_outcome_the_database_never_takes_is_given_up_at_the_stop(server_db: DB) -> None:
    db, runs = server_db, []
    reg = Registry()

    @reg.run("J")
    def work(j: Job) -> None:
        runs.append(j.id)
        raise ValueError("the job's error")

    job_id = db.insert(obj("J"))
    w = make_worker(db.config(shutdown_timeout=1, sleep_delay=0.1), reg)
    w.store.db.retry_window = 0.3  # each write's own retries end soon (60 s by default)
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    rule = faults.add(r"SET attempts = ", lost_connection(db), times=10**6)
    with capture_logs() as logs:
        thread = threading.Thread(target=w.start, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while rule.fired < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rule.fired >= 2, "the failed attempt's outcome was not being retried"
        stopped = time.monotonic()
        w.stop()
        thread.join(30)
        w.close()
    assert not thread.is_alive(), "start() did not return"
    assert time.monotonic() - stopped < 20
    assert runs == [job_id], "the job ran again while its outcome was pending"
    row = db.row(job_id)
    assert (row.attempts, row.last_error, row.failed_at) == (0, None, None)  # nothing written
    assert row.locked_by is None  # the release at the stop worked (only the UPDATE failed)
    unwritten = [e for e in logs if e["event"] == "job.outcome_unwritten"]
    assert unwritten and unwritten[0]["outcome"] == "Rescheduled"
    # Nothing is lost: the next worker runs it, at the same attempt.
    rule.times = 0
    w2 = make_worker(db.config(), reg)
    try:
        assert w2.work_off() == (0, 1)
    finally:
        w2.close()
    assert runs == [job_id, job_id] and db.row(job_id).attempts == 1
