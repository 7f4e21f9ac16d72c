"""Eight workers fight over thousands of no-op jobs that both sides can run.

Three single-slot dj_consumer processes, one with three slots (threads), and two Ruby
delayed_job workers: eight `locked_by` names reserving from the same ready rows. No job may
run twice, none may be lost, and no database error (deadlock, lock wait, serialization) may
reach a job: the store retries them transparently and logs `db.retrying`.

On MariaDB the Ruby workers use `reserve_sql_strategy = :default_sql`; see
test_mixed_fleet.py for why (Ruby's default deadlocks against other Ruby workers).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter

import pytest
import structlog

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.interop.conftest import Interop
from tests.interop.helpers import (
    events_named,
    failed_tails,
    spawn_py_worker,
    wait_all,
)

# `make test`: 3,000 on MariaDB, 2,000 on PostgreSQL (~150 jobs/s on this 2-core box: every job
# is three commits, each a WAL flush, on a server shared with the other tests) — the same eight
# names racing for the same rows from the first to the last job, in a third of the time.
# `make soak` runs 10,000 on each (DJ_CONTENTION_JOBS), as this test did in `make test` before.
SOAK_JOBS = int(os.environ.get("DJ_CONTENTION_JOBS") or 0)
JOBS_BY_BACKEND = {"mariadb": SOAK_JOBS or 3_000, "postgresql": SOAK_JOBS or 2_000}
PY_PROCESSES = [("py1", 1), ("py2", 1), ("py3", 1), ("py4", 3)]  # 6 Python slots
RUBY_WORKERS = ["rb1", "rb2"]


def heartbeat_race(event: dict[str, object]) -> bool:
    """job.lock_lost from a heartbeat that raced the job's own DELETE (the job ran once and
    its row is gone): a false alarm, shown by test_heartbeat_never_calls_a_finished_job_lost."""
    return event.get("during") == "heartbeat" and event.get("row_exists") is False



@pytest.mark.ruby
@pytest.mark.slow
def test_eight_workers_on_thousands_of_jobs(interop: Interop, procs: list[subprocess.Popen[bytes]]) -> None:
    jobs = JOBS_BY_BACKEND[interop.backend]
    t0 = time.monotonic()
    interop.ruby.enqueue([{"kind": "struct", "class": "SharedJob", "args": {"key": "n-%{i}"},
                           "queue": "shared", "count": jobs, "bulk": True}])
    assert interop.db.count() == jobs
    t1 = time.monotonic()

    strategy = "default_sql" if interop.backend == "mariadb" else None
    logs = []
    for name in RUBY_WORKERS:
        logs.append(interop.tmp_path / f"{name}.log")
        procs.append(interop.ruby.spawn_worker(logs[-1], queues=["shared"], name_prefix=name,
                                               exit_on_complete=True, drain=True, strategy=strategy,
                                               sleep_delay=0.05))
    for name, slots in PY_PROCESSES:
        logs.append(interop.tmp_path / f"{name}.log")
        procs.append(spawn_py_worker(interop.url, interop.table, logs[-1], worker_id=name,
                                     concurrency=slots, sleep_delay=0.05))
    codes = wait_all(procs, timeout=max(240, jobs // 25), logs=logs)
    t2 = time.monotonic()
    assert codes == [0] * len(procs), failed_tails(codes, logs)

    assert interop.db.rows() == []
    runs = interop.runs.performed()
    counts = Counter(r.job_key for r in runs)
    assert len(counts) == jobs
    twice = sorted(k for k, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} jobs ran more than once: {twice[:10]}"
    workers = Counter(r.worker.split(" ")[0] if r.worker else "?" for r in runs)
    assert len(workers) == 2 + sum(slots for _, slots in PY_PROCESSES), workers

    retried = 0
    for log in logs:
        if log.stem.startswith("py"):
            for bad in ("job.failed", "job.rescheduled", "job.lock_lost", "db.unavailable"):
                events = [e for e in events_named(log, bad) if not heartbeat_race(e)]
                assert not events, f"{log.name}: {events[:3]}"
            retried += len(events_named(log, "db.retrying"))
        else:
            text = log.read_text(errors="replace")
            assert "FAILED" not in text, text[-3000:]
    print(f"\n{interop.backend}: enqueue {t1 - t0:.1f}s, drain {jobs} jobs in {t2 - t1:.1f}s "
          f"({jobs / (t2 - t1):.0f} jobs/s), db.retrying {retried}x, per worker {dict(workers)}")


def test_heartbeat_never_calls_a_finished_job_lost(server_db: DB) -> None:
    """A heartbeat that races a job's own DELETE must not log job.lock_lost (or set timed_out).

    worker._heartbeat_loop snapshots _in_flight, then renews outside the lock; the slot may
    finish the job and delete its row in between, and the fenced renew then touches nothing.
    That is the job succeeding, not "another worker holds the row now (or Rails deleted
    it)". Seen in test_eight_workers_on_thousands_of_jobs with the default 60 s heartbeat;
    a short heartbeat makes it show up in every run.
    """
    registry = Registry()

    @registry.run("NoopJob")
    def noop(j: Job) -> None:
        time.sleep(0.003)  # about one INSERT's worth of work

    for i in range(300):
        server_db.insert(f"--- !ruby/struct:NoopJob\nkey: {i}\n")
    worker = make_worker(server_db.config(concurrency=4, exit_on_complete=True,
                                          heartbeat_interval=0.001), registry)
    try:
        with structlog.testing.capture_logs() as logs:
            worker.start()
    finally:
        worker.close()
    assert server_db.count() == 0
    assert sum(e["event"] == "job.succeeded" for e in logs) == 300
    lost = [e for e in logs if e["event"] == "job.lock_lost"]
    assert not lost, f"{len(lost)} finished jobs reported lost, e.g. {lost[:2]}"
