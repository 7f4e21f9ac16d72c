"""SPEC §5 and issue 7: leases, fenced completion, interrupts that cost no attempt, process timeouts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

from dj_consumer import Job, Registry, make_worker
from dj_consumer.clock import SystemClock
from tests.conftest import DB, clean_env
from tests.integration.test_protocol import obj


def test_a_renewing_workers_lock_expires_after_lock_timeout_not_max_run_time(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    now = SystemClock().now().replace(microsecond=0)
    # A crashed Python worker (same worker_id family) locked this 2 minutes ago.
    crashed = db.insert(obj("J"), locked_by="pytest:3 host:gone pid:1", locked_at=now - timedelta(minutes=2))
    # A Ruby worker's lock of the same age is live for Ruby's whole max_run_time.
    ruby = db.insert(obj("J"), locked_by="delayed_job host:x pid:2", locked_at=now - timedelta(minutes=2))
    w = make_worker(db.config(lock_timeout=60, heartbeat_interval=10), reg)
    assert w.work_off() == (1, 0)
    assert db.row(crashed) is None
    assert db.row(ruby).locked_by == "delayed_job host:x pid:2"


def test_heartbeat_renews_locked_at_while_the_job_runs(db: DB) -> None:
    reg = Registry()
    seen: list[object] = []

    def long(j: Job) -> None:
        first = db.row(j.id).locked_at
        time.sleep(2.5)
        seen.append((first, db.row(j.id).locked_at))

    reg.run("J")(long)
    db.insert(obj("J"))
    w = make_worker(db.config(heartbeat_interval=1, lock_timeout=5), reg)
    assert w.work_off() == (1, 0)
    w.close()
    ((first, later),) = seen
    assert later > first  # type: ignore[operator]


def test_lost_lease_is_logged_and_the_outcome_not_written(db: DB, capsys: object) -> None:
    reg = Registry()

    def long(j: Job) -> None:
        db.update(j.id, locked_by="py:9 host:other pid:3")  # someone took it over
        assert j.timed_out.wait(10), "heartbeat did not notice the lost lease"

    reg.run("J")(long)
    job_id = db.insert(obj("J"))
    w = make_worker(db.config(heartbeat_interval=0.3, lock_timeout=5), reg)
    w.work_off()
    w.close()
    row = db.row(job_id)
    assert (row.locked_by, row.attempts, row.last_error) == ("py:9 host:other pid:3", 0, None)


def test_process_timeout_kills_an_infinite_loop_and_the_slot_survives(db: DB) -> None:
    reg = Registry()
    ran: list[int] = []

    def forever(j: Job) -> None:
        while True:
            pass

    reg.run("Loop", timeout="process", max_run_time=1)(forever)
    reg.run("Next")(lambda j: ran.append(j.id))
    loop = db.insert(obj("Loop"), priority=-1)
    nxt = db.insert(obj("Next"))
    started = time.monotonic()
    assert make_worker(db.config(), reg).work_off() == (1, 1)
    assert time.monotonic() - started < 15
    row = db.row(loop)
    assert row.attempts == 1 and row.failed_at is None
    assert "was killed" in row.last_error.splitlines()[0]
    assert ran == [nxt]


def test_process_mode_reports_the_childs_error_and_failjob(db: DB) -> None:
    from dj_consumer import FailJob

    reg = Registry()

    def bad(j: Job) -> None:
        raise KeyError("missing in child")

    def refuse(j: Job) -> None:
        raise FailJob("no way")

    reg.run("Bad", timeout="process")(bad)
    reg.run("Refuse", timeout="process")(refuse)
    reg.run("Fine", timeout="process")(lambda j: None)
    b, r, f = db.insert(obj("Bad")), db.insert(obj("Refuse")), db.insert(obj("Fine"))
    assert make_worker(db.config(), reg).work_off() == (1, 2)
    # named by the child's class, not ChildJobError's
    assert db.row(b).last_error.startswith("KeyError: 'missing in child'\nTraceback")
    assert db.row(b).last_error.endswith("KeyError: 'missing in child'")
    assert db.row(r).failed_at is not None
    assert db.row(f) is None


def _work(db: DB, tmp_path: Path, code: str, *extra: str,
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    (tmp_path / "handlers.py").write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", db.url,
         "--table-name", db.table, "--import", str(tmp_path / "handlers.py"),
         "--sleep-delay", "0.1", "--log-format", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(**(env or {})), cwd=tmp_path,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


STUBBORN = """
    import time
    from dj_consumer import job

    @job.run("Stubborn")
    def stubborn(j):
        open("started", "w").close()
        time.sleep(60)  # ignores j.timed_out
"""


def test_second_sigterm_interrupts_without_spending_an_attempt(db: DB, tmp_path: Path) -> None:
    job_id = db.insert(obj("Stubborn"), attempts=3)
    run_at = db.row(job_id).run_at
    proc = _work(db, tmp_path, STUBBORN)
    _wait_for(tmp_path / "started", proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still finishing the job in hand
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    row = db.row(job_id)
    assert (row.attempts, row.run_at, row.locked_by, row.locked_at, row.failed_at) == (3, run_at, None, None, None)
    assert row.last_error.startswith("Interrupted: worker py host:")
    assert "(second SIGTERM)" in row.last_error
    assert '"event": "job.interrupted"' in err


def test_shutdown_timeout_interrupts_too(db: DB, tmp_path: Path) -> None:
    job_id = db.insert(obj("Stubborn"))
    proc = _work(db, tmp_path, STUBBORN, env={"DJ_SHUTDOWN_TIMEOUT": "1"})
    _wait_for(tmp_path / "started", proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    row = db.row(job_id)
    assert row.attempts == 0 and row.locked_by is None
    assert "shutdown_timeout (1s) ran out" in row.last_error


def test_stop_from_a_thread_with_concurrency_finishes_all_jobs_in_hand(db: DB) -> None:
    reg = Registry()
    started = threading.Semaphore(0)

    def job(j: Job) -> None:
        started.release()
        time.sleep(0.5)

    reg.run("J")(job)
    ids = [db.insert(obj("J")) for _ in range(3)]
    w = make_worker(db.config(concurrency=3), reg)
    thread = threading.Thread(target=w.start)
    thread.start()
    for _ in range(3):
        assert started.acquire(timeout=20)
    w.stop()
    thread.join(20)
    assert all(db.row(i) is None for i in ids)
