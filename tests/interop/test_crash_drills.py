"""Crash drills with Ruby delayed_job workers on the same table.

(a) kill -9 of a dj_consumer worker mid-job: its rows stay locked until max_run_time (3 s on
    both sides here), then a Ruby or a Python worker runs them; nothing is lost.
(b) the database restarted mid-drain (a private MariaDB / PostgreSQL on a spare port): the
    workers log db.retrying / db.unavailable, carry on, and every job finishes; the test
    reports how many ran twice (only jobs in flight at the cut may).
(c) SIGTERM during a long job beside a Ruby worker: the job finishes, locks are released,
    exit 0, and Ruby never took the job. A second SIGTERM during a job that ignores
    timed_out interrupts it: the row is unlocked with attempts unchanged and a last_error
    saying so, and Ruby sees it ready to run again.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.interop.conftest import Interop, make_interop, require_ruby
from tests.interop.helpers import (
    Runs,
    events_named,
    failed_tails,
    spawn_py_worker,
    tail,
    wait_all,
    wait_for,
)
from tests.interop.servers import PrivateMariaDB, PrivatePostgres, PrivateServer

pytestmark = [pytest.mark.ruby, pytest.mark.slow]

MAX_RUN_TIME = 3



def shared_jobs(prefix: str, count: int, **args: object) -> dict[str, object]:
    return {"kind": "struct", "class": "SharedJob", "args": {"key": f"{prefix}-%{{i}}", **args},
            "queue": "shared", "count": count}


def started_by(runs: Runs, prefix: str, keys: set[str]) -> bool:
    got = {r.job_key for r in runs.performed() if (r.worker or "").startswith(prefix)}
    return keys <= got


# -- (a) kill -9 ------------------------------------------------------------------------------


@pytest.mark.parametrize("rescuer", ["ruby", "python"])
def test_kill_9_mid_job_then_another_worker_runs_it_after_max_run_time(
    interop: Interop, procs: list[subprocess.Popen[bytes]], rescuer: str
) -> None:
    victims = {"v-0", "v-1"}
    interop.ruby.enqueue([shared_jobs("v", 2, seconds=2.0), shared_jobs("q", 10)])
    log = interop.tmp_path / "victim.log"
    victim = spawn_py_worker(interop.url, interop.table, log, worker_id="victim", concurrency=2,
                             exit_on_complete=False, max_run_time=MAX_RUN_TIME)
    procs.append(victim)
    wait_for(lambda: started_by(interop.runs, "victim", victims), timeout=20,
             what="the victim worker to start both long jobs")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    locked = {r.id: r for r in interop.db.rows() if r.locked_by}
    assert len(locked) == 2 and all(r.locked_by.startswith("victim") for r in locked.values())

    rescue_log = interop.tmp_path / "rescuer.log"
    if rescuer == "ruby":
        rescue = interop.ruby.spawn_worker(rescue_log, queues=["shared"], name_prefix="rescuer",
                                           exit_on_complete=False, max_run_time=MAX_RUN_TIME)
    else:
        rescue = spawn_py_worker(interop.url, interop.table, rescue_log, worker_id="rescuer",
                                 exit_on_complete=False, max_run_time=MAX_RUN_TIME)
    procs.append(rescue)
    wait_for(lambda: interop.db.count() == 0, timeout=30, interval=0.2,
             what=f"the {rescuer} rescuer to drain the table\n{tail(rescue_log)}")
    rescue.send_signal(signal.SIGTERM)
    assert rescue.wait(timeout=20) == 0, tail(rescue_log)

    runs = interop.runs.all()
    counts = Counter(r.job_key for r in runs if r.note is None)
    assert {k: n for k, n in counts.items() if k.startswith("q-")} == {f"q-{i}": 1 for i in range(10)}
    for key in victims:
        first, second = [r for r in runs if r.job_key == key and r.note is None]
        assert first.worker.startswith("victim") and second.worker.startswith("rescuer")
        assert second.runner == rescuer and second.attempts == 0  # a crash costs no attempt
        done = [r for r in runs if r.job_key == key and r.note == "done"]
        assert [r.worker.split(" ")[0] for r in done] == ["rescuer"]
        # Not before the lock went stale: locked_at < now - max_run_time.
        locked_at = locked[first.job_id].locked_at
        assert second.created_at >= locked_at + timedelta(seconds=MAX_RUN_TIME), (locked_at, second)


# -- (b) the database restarts mid-drain --------------------------------------------------------


@pytest.fixture(params=["mariadb", "postgresql"])
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    kind = PrivateMariaDB if request.param == "mariadb" else PrivatePostgres
    reason = kind.missing()
    if reason:
        unavailable(reason)
    require_ruby()
    server = kind()
    try:
        yield server
    finally:
        server.close()


def test_database_restart_mid_drain(
    private_server: PrivateServer, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    with contextmanager(make_interop)(private_server.backend, tmp_path, private_server.url) as it:
        table, db, runs = it.db.table, it.db, it.runs
        jobs = 600
        it.ruby.enqueue([shared_jobs("r", jobs, seconds=0.02)])
        logs = [tmp_path / "py1.log", tmp_path / "py2.log"]
        for i, log in enumerate(logs):
            procs.append(spawn_py_worker(private_server.url, table, log, worker_id=f"py{i + 1}",
                                         concurrency=2, exit_on_complete=True))
        wait_for(lambda: len(runs.performed()) >= 100, timeout=30, what="the drain to get going")
        cut = time.monotonic()
        private_server.stop()
        time.sleep(3)
        private_server.start()
        outage = time.monotonic() - cut
        codes = wait_all(procs, timeout=120, logs=logs)
        assert codes == [0, 0], failed_tails(codes, logs)

        assert db.rows() == []
        counts = runs.counts()
        assert len(counts) == jobs, f"lost: {jobs - len(counts)}"
        twice = {k: n for k, n in counts.items() if n > 1}
        # Only jobs in flight at the cut may run again: at most one per slot (4 slots).
        assert len(twice) <= 4 and all(n == 2 for n in twice.values()), twice
        events = {name: sum(len(events_named(log, name)) for log in logs)
                  for name in ("db.retrying", "db.unavailable", "job.lock_lost", "job.failed",
                               "job.rescheduled")}
        assert events["db.retrying"] + events["db.unavailable"] > 0, events
        assert events["job.failed"] == 0, events
        print(f"\n{private_server.backend}: outage {outage:.1f}s, {jobs} jobs, ran twice: "
              f"{len(twice)} {sorted(twice)}, log events {events}")


# -- (c) SIGTERM ----------------------------------------------------------------------------


def test_sigterm_finishes_the_job_beside_a_ruby_worker(
    interop: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    interop.ruby.enqueue([shared_jobs("long", 1, seconds=2.0), shared_jobs("q", 30)])
    py_log, rb_log = interop.tmp_path / "py.log", interop.tmp_path / "rb.log"
    py = spawn_py_worker(interop.url, interop.table, py_log, worker_id="py", concurrency=2,
                         exit_on_complete=False)
    procs.append(py)
    wait_for(lambda: started_by(interop.runs, "py", {"long-0"}), timeout=20,
             what="the Python worker to start the long job")
    rb = interop.ruby.spawn_worker(rb_log, queues=["shared"], name_prefix="rb",
                                   exit_on_complete=False, max_run_time=MAX_RUN_TIME)
    procs.append(rb)
    py.send_signal(signal.SIGTERM)
    assert py.wait(timeout=15) == 0, tail(py_log)
    wait_for(lambda: interop.db.count() == 0, timeout=30, interval=0.2,
             what=f"the Ruby worker to drain the rest\n{tail(rb_log)}")
    rb.send_signal(signal.SIGTERM)
    assert rb.wait(timeout=15) == 0, tail(rb_log)

    runs = interop.runs.all()
    long_runs = [(r.runner, r.note) for r in runs if r.job_key == "long-0"]
    assert long_runs == [("python", None), ("python", "done")]  # finished, by us, once
    counts = Counter(r.job_key for r in runs if r.note is None)
    assert all(n == 1 for n in counts.values()) and len(counts) == 31, counts
    stopped = events_named(py_log, "worker.stopped")
    assert stopped, tail(py_log)
    assert events_named(py_log, "worker.stopping")


def test_second_sigterm_interrupts_a_job_that_ignores_timed_out(
    interop: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    (job_id,) = interop.ruby.enqueue([shared_jobs("stubborn", 1, seconds=60, stubborn=True)])
    log = interop.tmp_path / "py.log"
    py = spawn_py_worker(interop.url, interop.table, log, worker_id="py", exit_on_complete=False)
    procs.append(py)
    wait_for(lambda: started_by(interop.runs, "py", {"stubborn-0"}), timeout=20,
             what="the Python worker to start the stubborn job")
    py.send_signal(signal.SIGTERM)
    wait_for(lambda: events_named(log, "worker.stopping"), timeout=10, what="worker.stopping")
    time.sleep(0.5)
    assert py.poll() is None, "the first SIGTERM waits for the job in hand"
    sent = time.monotonic()
    py.send_signal(signal.SIGTERM)
    code = py.wait(timeout=15)
    took = time.monotonic() - sent
    assert code == 0, tail(log)
    assert took < 10

    row = interop.db.row(job_id)
    assert row is not None
    assert row.locked_by is None and row.locked_at is None
    assert row.attempts == 0 and row.failed_at is None
    assert "nterrupted" in (row.last_error or ""), row.last_error
    (view,) = interop.ruby.inspect([job_id], max_run_time=MAX_RUN_TIME)
    assert view["ready"] is True and view["failed"] is False and view["attempts"] == 0
    assert events_named(log, "job.interrupted"), tail(log)
    print(f"\nsecond SIGTERM: exit {code} after {took:.2f}s; last_error "
          f"{(row.last_error or '').splitlines()[0]!r}")
