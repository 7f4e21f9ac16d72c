"""Issue 19: `dj-consumer work --processes P` — a supervisor, its children, one /metrics.

Real subprocesses against real databases: counts scraped over HTTP during a drain equal the
outcomes in the table; kill -9 of a child mid-job is survived; a child whose database
refuses it for good stops the whole supervisor with a non-zero exit.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dj_consumer.errors import ConfigError
from tests.conftest import DB
from tests.integration.procs import Proc, get, samples, total, write_jobs
from tests.integration.test_protocol import obj

CHILD_LOCK = re.compile(r"^pytest\.[01]:[01] host:\S+ pid:\d+$")


def outcomes(db: DB) -> tuple[int, int, int]:
    """(rows left unfinished and never failed, rescheduled rows, failed rows)."""
    rows = db.rows()
    waiting = sum(1 for r in rows if r.failed_at is None and r.attempts == 0)
    rescheduled = sum(1 for r in rows if r.failed_at is None and r.attempts > 0)
    failed = sum(1 for r in rows if r.failed_at is not None)
    return waiting, rescheduled, failed


def test_metrics_scraped_during_a_drain_match_the_table(db: DB, tmp_path: Path) -> None:
    """Two processes x two slots drain 60 jobs; /metrics (one endpoint for the supervisor)
    is scraped while they work and after: its counts are the table's outcomes."""
    write_jobs(tmp_path, ok_sleep=0.05)
    db.insert_many([obj("OkJob")] * 50)
    db.insert_many([obj("BadJob")] * 6)  # first attempt fails: rescheduled
    db.insert_many([obj("BadJob")] * 4, attempts=1)  # second of max 2: failed for good
    before = db.count()
    proc = Proc(["--database-url", db.url, "--table-name", db.table, "--import", "issue19jobs",
                 "--processes", "2", "-n", "2", "--metrics-port", "0", "--sleep-delay", "0.2",
                 "--max-attempts", "2", "--worker-id", "pytest"], cwd=tmp_path)
    try:
        port = proc.port()
        during = proc.wait_for(lambda: (lambda s: s[1] if s[0] == 200 and 0 < total(
            s[1], "dj_consumer_job_succeeded_total") < 50 else None)(get(port, "/metrics")),
            why="a scrape mid-drain")
        assert total(during, "dj_consumer_job_succeeded_total") <= before - db.count() + 4
        proc.wait_for(lambda: outcomes(db)[0] == 0 and db.count() == 10, why="the drain")
        # The last outcomes are written just before the table shows them: scrape until the
        # counts settle (they never go past the table's).
        time.sleep(0.5)
        status, text = get(port, "/metrics")
        assert status == 200
        _, rescheduled, failed = outcomes(db)
        assert (rescheduled, failed) == (6, 4)
        assert total(text, "dj_consumer_job_succeeded_total") == 50
        assert samples(text, "dj_consumer_job_succeeded_total") == {
            (("name", "OkJob"), ("queue", "")): 50}
        assert total(text, "delayed_job_error_total") == rescheduled
        assert total(text, "delayed_job_failure_total") == failed
        assert total(text, "dj_consumer_job_lock_lost_total") == 0
        assert total(text, "delayed_job_run_seconds_count") == 60
        assert total(text, "delayed_worker_reserve_jobs_seconds_count") >= 60 / 2
        assert total(text, "dj_consumer_jobs_in_flight") == 0
        assert total(text, "dj_consumer_last_successful_poll_timestamp_seconds") > time.time() - 60
        assert get(port, "/healthz")[0] == 200
        status, body = get(port, "/readyz")
        assert status == 200 and "child 0: ok" in body and "child 1: ok" in body, body
        locks = (tmp_path / "locked_by.txt").read_text().split()
        lines = (tmp_path / "locked_by.txt").read_text().splitlines()
        assert locks and all(CHILD_LOCK.match(line) for line in lines), lines[:5]
        assert {line.split(" ")[0].split(":")[0] for line in lines} == {"pytest.0", "pytest.1"}
    finally:
        code = proc.stop()
    assert code == 0, proc.lines[-20:]
    assert [e["exit_codes"] for e in proc.events("supervisor.stopped")] == [[0, 0]]


def test_kill_9_of_a_child_mid_job_restarts_it_and_the_job_comes_back(
        db: DB, tmp_path: Path) -> None:
    write_jobs(tmp_path)
    hang = db.insert(obj("HangJob"))
    proc = Proc(["--database-url", db.url, "--table-name", db.table, "--import", "issue19jobs",
                 "--processes", "2", "--sleep-delay", "0.2", "--worker-id", "pytest",
                 "--lock-timeout", "3", "--heartbeat-interval", "0.5"], cwd=tmp_path)
    marker = tmp_path / "hang.pid"
    try:
        proc.wait_for(marker.exists, why="the hanging job to start")
        victim = int(marker.read_text())
        started = {e["pid"]: e["child"] for e in proc.events("supervisor.child_started")}
        assert victim in started
        survivor = next(pid for pid in started if pid != victim)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        died = proc.wait_for(lambda: proc.events("supervisor.child_died"), why="the restart")
        assert died[0]["pid"] == victim and died[0]["exit_code"] == -signal.SIGKILL
        proc.wait_for(lambda: len(proc.events("supervisor.child_started")) == 3,
                      why="the child's restart")
        # The job comes back after lock_timeout (3 s), not before, and runs again.
        proc.wait_for(lambda: db.row(hang) is None, timeout=60, why="the job to run again")
        assert time.monotonic() - killed_at >= 2.5
        # The other child was not disturbed: still the same process, still working.
        os.kill(survivor, 0)
        db.insert_many([obj("OkJob")] * 10)
        proc.wait_for(lambda: db.count() == 0, why="new jobs after the restart")
    finally:
        code = proc.stop()
    assert code == 0, proc.lines[-20:]


FATAL_JOBS = '''
from dj_consumer import job, slots

# Scaled down from 60 s and 10 reserves, so the test takes seconds.
slots.REFUSED_FOR, slots.REFUSED_TIMES = 1.0, 3

@job.run("OkJob")
def ok(j):
    pass
'''


def test_children_refused_for_good_stop_the_supervisor_non_zero(db: DB, tmp_path: Path) -> None:
    """The table disappears under a running supervisor: every child's reserves are refused,
    each exits 2 (FatalError) once the refusal bound is reached, none is restarted, and
    the supervisor exits 2."""
    (tmp_path / "fataljobs.py").write_text(FATAL_JOBS)
    db.insert(obj("OkJob"))
    proc = Proc(["--database-url", db.url, "--table-name", db.table, "--import", "fataljobs",
                 "--processes", "2", "--sleep-delay", "0.1", "--worker-id", "pytest"],
                cwd=tmp_path)
    try:
        proc.wait_for(lambda: db.count() == 0, why="the first job")
        proc.wait_for(lambda: len(proc.events("worker.started")) == 2, why="both children")
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {db.table}"))
        code = proc.proc.wait(60)
    finally:
        proc.close()
        db.engine.dispose()
        from dj_consumer import schema

        schema.create(db.engine, db.table)  # for the fixture's DROP
    assert code == 2, proc.lines[-20:]
    assert len(proc.events("supervisor.child_started")) == 2  # never restarted
    assert proc.events("supervisor.child_fatal")
    assert any(e.get("event") == "worker.fatal" for e in proc.events()), proc.lines


def test_a_child_that_cannot_start_is_not_restarted(sqlite_db: DB, tmp_path: Path) -> None:
    """A missing table at start: each child exits 2 with one line; the supervisor exits 2."""
    write_jobs(tmp_path)
    proc = Proc(["--database-url", sqlite_db.url, "--table-name", "no_such_table",
                 "--import", "issue19jobs", "--processes", "2", "--worker-id", "pytest"],
                cwd=tmp_path)
    try:
        code = proc.proc.wait(60)
    finally:
        proc.close()
    assert code == 2
    assert len(proc.events("supervisor.child_started")) == 2
    assert any("table 'no_such_table' does not exist" in line for line in proc.lines)


def test_one_process_serves_metrics_and_health_on_its_port(sqlite_db: DB, tmp_path: Path) -> None:
    """Without --processes the worker serves its own port: the same names, its own counts."""
    write_jobs(tmp_path)
    sqlite_db.insert_many([obj("OkJob")] * 5)
    proc = Proc(["--database-url", sqlite_db.url, "--table-name", sqlite_db.table,
                 "--import", "issue19jobs", "--metrics-port", "0", "--sleep-delay", "0.2",
                 "--worker-id", "pytest"], cwd=tmp_path)
    try:
        port = proc.port()
        proc.wait_for(lambda: sqlite_db.count() == 0, why="the drain")
        text = proc.wait_for(lambda: (lambda s: s[1] if total(
            s[1], "dj_consumer_job_succeeded_total") == 5 else None)(get(port, "/metrics")),
            why="five successes counted")
        assert total(text, "delayed_job_run_seconds_count") == 5
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ok\n")
        assert get(port, "/nothing")[0] == 404
        lines = (tmp_path / "locked_by.txt").read_text().splitlines()
        assert all(line.startswith("pytest host:") for line in lines), lines
    finally:
        assert proc.stop() == 0


def test_metrics_without_the_extra_is_one_clear_line() -> None:
    from dj_consumer import metrics

    mp = pytest.MonkeyPatch()
    try:
        mp.setitem(sys.modules, "prometheus_client", None)
        with pytest.raises(ConfigError, match=r"pip install 'dj_consumer\[metrics\]'"):
            metrics.require()
    finally:
        mp.undo()


def test_a_second_sigterm_interrupts_the_children_s_jobs(server_db: DB, tmp_path: Path) -> None:
    """Forwarded once each: the first SIGTERM lets the running job go on, the second unlocks
    it with attempts unchanged, and the supervisor still exits 0."""
    db = server_db
    write_jobs(tmp_path)
    hang = db.insert(obj("HangJob"))
    proc = Proc(["--database-url", db.url, "--table-name", db.table, "--import", "issue19jobs",
                 "--processes", "2", "--sleep-delay", "0.2", "--worker-id", "pytest"],
                cwd=tmp_path)
    try:
        proc.wait_for((tmp_path / "hang.pid").exists, why="the hanging job")
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for(lambda: proc.events("worker.stopping"), why="the children stopping")
        time.sleep(0.5)
        assert proc.proc.poll() is None  # the job in hand is being finished
        assert db.row(hang).locked_by is not None
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(60)
    finally:
        proc.close()
    assert code == 0, proc.lines[-20:]
    row = db.row(hang)
    assert row.locked_by is None and row.attempts == 0 and "Interrupted" in row.last_error
    assert proc.events("worker.interrupting")
    assert [e["exit_codes"] for e in proc.events("supervisor.stopped")] == [[0, 0]]


def test_a_sigterm_while_the_children_start_is_a_clean_stop(sqlite_db: DB, tmp_path: Path) -> None:
    """A child that gets the forwarded SIGTERM before its worker runs (still importing) dies
    of it, holding nothing: that is a clean stop, exit 0, not a failure."""
    write_jobs(tmp_path)
    proc = Proc(["--database-url", sqlite_db.url, "--table-name", sqlite_db.table,
                 "--import", "issue19jobs", "--processes", "2", "--worker-id", "pytest"],
                cwd=tmp_path)
    try:
        proc.wait_for(lambda: len(proc.events("supervisor.child_started")) == 2, why="spawns")
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(60)
    finally:
        proc.close()
    assert code == 0, proc.lines[-20:]


def test_children_of_a_killed_supervisor_finish_and_exit(sqlite_db: DB, tmp_path: Path) -> None:
    write_jobs(tmp_path)
    proc = Proc(["--database-url", sqlite_db.url, "--table-name", sqlite_db.table,
                 "--import", "issue19jobs", "--processes", "2", "--worker-id", "pytest",
                 "--sleep-delay", "0.2"], cwd=tmp_path)
    try:
        proc.wait_for(lambda: len(proc.events("worker.started")) == 2, why="both children")
        pids = [int(e["pid"]) for e in proc.events("supervisor.child_started")]
        proc.proc.kill()
        proc.proc.wait(10)
        deadline = time.monotonic() + 30
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in pids if _running(pid)]
        assert not alive, proc.lines[-10:]
        assert len(proc.events("worker.orphaned")) == 2
    finally:
        proc.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie is reaped by init, not by us)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("value", "expect"), [
    ("auto", len(os.sched_getaffinity(0))), ("1", 1), (3, 3), ("999", 999)])
def test_processes_is_auto_or_a_whole_number(value: object, expect: int) -> None:
    from dj_consumer.config import Config

    assert Config.from_mapping({"database_url": "sqlite://", "processes": value}).process_count \
        == expect


@pytest.mark.parametrize("value", ["0", "-1", "two", "1000", "1.5"])
def test_processes_mistakes_are_one_line(value: str) -> None:
    from dj_consumer.config import Config

    with pytest.raises(ConfigError, match=r"^processes must be auto or a whole number 1-999, got"):
        Config.from_mapping({"database_url": "sqlite://", "processes": value})


def test_metrics_count_timeouts_and_lost_locks(sqlite_db: DB) -> None:
    """In process: an attempt past max_run_time counts as timed out (and as an error); an
    outcome whose row was taken meanwhile counts as lock lost, not as a success."""
    from dj_consumer import Job, Registry, make_worker
    from dj_consumer.metrics import Metrics
    from dj_consumer.worker import Worker

    reg = Registry()

    def slow(j: Job) -> None:
        j.timed_out.wait(10)

    def stolen(j: Job) -> None:
        sqlite_db.update(j.id, locked_by="someone host:x pid:1")

    reg.run("Slow")(slow)
    reg.run("Stolen")(stolen)
    slow_id = sqlite_db.insert(obj("Slow"))
    sqlite_db.insert(obj("Stolen"))
    metrics = Metrics()
    cfg = make_worker(sqlite_db.config(max_run_time=1), reg).config
    w = Worker(cfg, reg, observer=metrics)
    try:
        w.work_off()
    finally:
        w.close()
    value = metrics.registry.get_sample_value
    assert value("dj_consumer_job_timed_out_total", {"name": "Slow", "queue": ""}) == 1
    assert value("delayed_job_error_total", {"name": "Slow", "queue": ""}) == 1
    assert sqlite_db.row(slow_id).attempts == 1
    assert value("dj_consumer_job_lock_lost_total", {"name": "Stolen", "queue": ""}) == 1
    assert value("dj_consumer_job_succeeded_total", {"name": "Stolen", "queue": ""}) is None
    assert value("dj_consumer_jobs_in_flight") == 0
    assert value("delayed_worker_reserve_jobs_seconds_count") >= 2


@pytest.mark.parametrize(("cpu_max", "expect"), [
    ("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("garbage", None)])
def test_auto_processes_follow_a_containers_cpu_limit(
        tmp_path: Path, cpu_max: str, expect: int | None) -> None:
    from dj_consumer.config import usable_cpus

    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(str(path)) == min(affinity, expect or affinity)
