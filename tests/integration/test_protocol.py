"""The row protocol of SPEC §4, against SQLite, MariaDB and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from dj_consumer import FailJob, Job, Registry, make_worker
from dj_consumer.clock import FakeClock, SystemClock
from tests.conftest import DB


def obj(name: str, **attrs: Any) -> str:
    """A handler as Psych writes a plain Ruby object."""
    lines = [f"--- !ruby/object:{name}"]
    lines += [f"{k}: {v}" for k, v in attrs.items()]
    return "\n".join(lines) + "\n" if attrs else f"--- !ruby/object:{name} {{}}\n"


def struct(name: str, **attrs: Any) -> str:
    lines = [f"--- !ruby/struct:{name}"] + [f"{k}: {v}" for k, v in attrs.items()]
    return "\n".join(lines) + "\n"


def now_clock() -> FakeClock:
    # A little ahead of the real clock, so rows inserted "now" (by the real clock, even a
    # second boundary later on a loaded machine) are ready at the fake now.
    return FakeClock(SystemClock().now().replace(microsecond=0) + timedelta(seconds=5))


def worker(db: DB, reg: Registry, clock: FakeClock | None = None, **cfg: Any):  # type: ignore[no-untyped-def]
    return make_worker(db.config(**cfg), reg, clock=clock)


def test_success_deletes_the_row_and_runs_hooks_in_ruby_order(db: DB) -> None:
    reg = Registry()
    calls: list[str] = []
    reg.before("NewsletterJob")(lambda j: calls.append("before"))
    reg.run("NewsletterJob")(lambda j: calls.append(f"run {j.payload['list_id']}"))
    reg.success("NewsletterJob")(lambda j: calls.append("success"))
    reg.error("NewsletterJob")(lambda j, e: calls.append("error"))
    reg.after("NewsletterJob")(lambda j: calls.append("after"))
    job_id = db.insert(obj("NewsletterJob", list_id=42))

    assert worker(db, reg).work_off(10) == (1, 0)
    assert calls == ["before", "run 42", "success", "after"]
    assert db.row(job_id) is None


def test_job_sees_the_row(db: DB) -> None:
    reg = Registry()
    seen: list[Job] = []
    reg.run("ImportJob", max_attempts=7)(seen.append)
    job_id = db.insert(struct("ImportJob", path="/tmp/x.csv"), priority=3, queue="imports", attempts=2)
    w = worker(db, reg)
    assert w.work_off() == (1, 0)
    (j,) = seen
    assert (j.id, j.name, j.display_name) == (job_id, "ImportJob", "ImportJob")
    assert j.payload == {"path": "/tmp/x.csv"}
    assert (j.attempts, j.max_attempts, j.queue, j.priority) == (2, 7, "imports", 3)
    assert j.locked_by == w.names[0]
    assert j.locked_by.startswith("pytest host:") and " pid:" in j.locked_by
    assert j.handler.startswith("--- !ruby/struct:ImportJob")
    assert not j.timed_out.is_set()


@pytest.mark.parametrize("prior", [0, 1, 3, 10])
def test_failed_attempt_reschedules_exactly_like_ruby(db: DB, prior: int) -> None:
    reg = Registry()
    errors: list[BaseException] = []

    def boom(j: Job) -> None:
        raise ValueError("smtp said no")

    reg.run("MailJob")(boom)
    reg.error("MailJob")(lambda j, e: errors.append(e))
    clock = now_clock()
    job_id = db.insert(obj("MailJob", to="a@b.c"), attempts=prior, run_at=clock.now())

    assert worker(db, reg, clock).work_off() == (0, 1)
    row = db.row(job_id)
    attempts = prior + 1
    # Delayed::Worker#reschedule: attempts += 1, then db_time_now + attempts**4 + 5
    assert row.attempts == attempts
    assert row.run_at == clock.now() + timedelta(seconds=attempts**4 + 5)
    assert row.locked_at is None and row.locked_by is None and row.failed_at is None
    assert row.last_error.startswith("ValueError: smtp said no\nTraceback (most recent call last):\n")
    assert "ValueError: smtp said no" in row.last_error
    assert row.updated_at == clock.now()
    assert [str(e) for e in errors] == ["smtp said no"]


def test_last_attempt_fails_for_good(db: DB) -> None:
    reg = Registry()
    calls: list[str] = []
    reg.run("MailJob")(lambda j: 1 / 0)
    reg.error("MailJob")(lambda j, e: calls.append(f"error {type(e).__name__}"))
    reg.failure("MailJob")(lambda j, e: calls.append(f"failure {type(e).__name__}"))
    clock = now_clock()
    job_id = db.insert(obj("MailJob"), attempts=24)

    assert worker(db, reg, clock).work_off() == (0, 1)
    row = db.row(job_id)
    assert row.attempts == 25
    assert row.failed_at == clock.now()
    assert row.last_error.startswith("ZeroDivisionError: division by zero\n")
    assert row.locked_by is None
    assert calls == ["error ZeroDivisionError", "failure ZeroDivisionError"]
    # failed rows are never picked up again
    assert worker(db, reg, clock).work_off() == (0, 0)


def test_destroy_failed_jobs_deletes_instead(db: DB) -> None:
    reg = Registry()
    reg.run("MailJob")(lambda j: 1 / 0)
    job_id = db.insert(obj("MailJob"), attempts=24)
    assert worker(db, reg, destroy_failed_jobs=True).work_off() == (0, 1)
    assert db.row(job_id) is None


def test_failjob_fails_at_once_and_runs_failure_hook_once(db: DB) -> None:
    reg = Registry()
    failures: list[str] = []

    def refuse(j: Job) -> None:
        raise FailJob("account closed")

    reg.run("ChargeJob")(refuse)
    reg.failure("ChargeJob")(lambda j, e: failures.append(str(e)))
    job_id = db.insert(obj("ChargeJob"))
    assert worker(db, reg).work_off() == (0, 1)
    row = db.row(job_id)
    assert row.failed_at is not None and row.attempts == 1
    assert row.last_error.startswith("dj_consumer.errors.FailJob: account closed\n")
    assert failures == ["account closed"]


def test_per_job_overrides(db: DB) -> None:
    reg = Registry()
    clock = now_clock()

    def later(now: datetime, attempts: int) -> datetime:
        return now + timedelta(hours=attempts)

    reg.run("A", max_attempts=2, reschedule_at=later)(lambda j: 1 / 0)
    reg.run("B", destroy_failed_jobs=True, max_attempts=1)(lambda j: 1 / 0)
    reg.run("C", destroy_failed_jobs=False)(lambda j: 1 / 0)
    a, b, c = db.insert(obj("A")), db.insert(obj("B")), db.insert(obj("C"), attempts=24)
    assert worker(db, reg, clock, destroy_failed_jobs=True).work_off() == (0, 3)
    assert db.row(a).run_at == clock.now() + timedelta(hours=1)
    assert db.row(b) is None
    assert db.row(c).failed_at == clock.now()
    # A's second failure uses its own max_attempts=2
    db.update(a, run_at=clock.now())
    assert worker(db, reg, clock).work_off() == (0, 1)
    assert db.row(a).failed_at is not None and db.row(a).attempts == 2


def test_jobs_without_a_python_handler_are_never_touched(db: DB) -> None:
    reg = Registry()
    reg.run("PyJob")(lambda j: None)
    ruby = [db.insert(obj("RubyOnlyJob", n=i)) for i in range(3)]
    prefix = db.insert(obj("PyJobButLonger"))
    ours = db.insert(obj("PyJob"))
    assert worker(db, reg).work_off(100) == (1, 0)
    assert db.row(ours) is None
    for job_id in [*ruby, prefix]:
        row = db.row(job_id)
        assert (row.locked_by, row.locked_at, row.attempts, row.failed_at) == (None, None, 0, None)


def test_order_priority_then_run_at(db: DB) -> None:
    reg = Registry()
    order: list[int] = []
    reg.run("J")(lambda j: order.append(j.payload["n"]))
    clock = now_clock()
    now = clock.now()
    db.insert(obj("J", n=1), priority=5, run_at=now - timedelta(minutes=1))
    db.insert(obj("J", n=2), priority=0, run_at=now - timedelta(minutes=1))
    db.insert(obj("J", n=3), priority=0, run_at=now - timedelta(minutes=2))
    db.insert(obj("J", n=4), priority=-3, run_at=now)
    db.insert(obj("J", n=5), priority=-9, run_at=now + timedelta(minutes=1))  # not yet
    assert worker(db, reg, clock).work_off() == (4, 0)
    assert order == [4, 3, 2, 1]
    assert db.count() == 1


def test_queue_and_priority_filters(db: DB) -> None:
    reg = Registry()
    ran: list[str] = []
    reg.run("J")(lambda j: ran.append(j.payload["tag"]))
    db.insert(obj("J", tag="mail"), queue="mail")
    db.insert(obj("J", tag="nil"))
    db.insert(obj("J", tag="other"), queue="other")
    db.insert(obj("J", tag="low"), queue="mail", priority=50)
    assert worker(db, reg, queues=["mail", None], max_priority=10).work_off() == (2, 0)
    assert sorted(ran) == ["mail", "nil"]
    ran.clear()
    assert worker(db, reg, min_priority=10).work_off() == (1, 0)
    assert ran == ["low"]
    ran.clear()
    assert worker(db, reg, queues="other").work_off() == (1, 0)
    assert ran == ["other"]


def test_live_locks_are_respected_and_stale_locks_recovered(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    clock = now_clock()
    now = clock.now()
    live = db.insert(obj("J"), locked_by="delayed_job host:x pid:1", locked_at=now - timedelta(hours=3))
    dead = db.insert(obj("J"), locked_by="delayed_job host:x pid:2", locked_at=now - timedelta(hours=5))
    failed = db.insert(obj("J"), failed_at=now)
    assert worker(db, reg, clock).work_off() == (1, 0)
    assert db.row(dead) is None
    assert db.row(live).locked_by == "delayed_job host:x pid:1"
    assert db.row(failed) is not None
    # A shorter max_run_time is a shorter horizon, as for Ruby.
    assert worker(db, reg, clock, max_run_time=3600).work_off() == (1, 0)
    assert db.row(live) is None


def test_rows_locked_by_our_own_name_are_resumed(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = worker(db, reg)
    job_id = db.insert(obj("J"), locked_by=w.names[0], locked_at=SystemClock().now())
    assert w.work_off() == (1, 0)
    assert db.row(job_id) is None


def test_unparseable_handler_fails_at_once_and_worker_goes_on(db: DB) -> None:
    reg = Registry()
    reg.run("BrokenJob")(lambda j: None)
    bad = db.insert("--- !ruby/object:BrokenJob\nfoo: [unclosed\n  bar: {\n", attempts=2)
    good = db.insert(obj("BrokenJob", ok=1))
    assert worker(db, reg).work_off() == (1, 1)
    row = db.row(bad)
    assert row.failed_at is not None
    assert row.attempts == 2  # like Ruby's DeserializationError: no attempt spent
    assert row.last_error.startswith("Job failed to load: ")
    assert db.row(good) is None


def test_cooperative_timeout_is_a_failed_attempt(db: DB) -> None:
    reg = Registry()
    seen: list[str] = []

    def patient(j: Job) -> None:
        assert j.timed_out.wait(10), "timed_out never set"
        seen.append("stopped")

    def stubborn(j: Job) -> None:
        j.timed_out.wait(10)  # returns normally after the deadline: still a failed attempt

    reg.run("Patient", max_run_time=0.3)(patient)
    reg.run("Stubborn")(stubborn)
    reg.error("Patient")(lambda j, e: seen.append(type(e).__name__))
    p, s = db.insert(obj("Patient")), db.insert(obj("Stubborn"))
    assert worker(db, reg, max_run_time=0.5).work_off() == (0, 2)
    assert seen == ["stopped", "JobTimeout"]
    for job_id in (p, s):
        row = db.row(job_id)
        assert row.attempts == 1
        assert row.last_error.startswith("dj_consumer.errors.JobTimeout: execution expired "
                                         "(Delayed::Worker.max_run_time is only 0 seconds)")


def test_hook_errors_count_as_the_attempts_error(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)

    def bad_after(j: Job) -> None:
        raise RuntimeError("after broke")

    reg.after("J")(bad_after)
    job_id = db.insert(obj("J"))
    assert worker(db, reg).work_off() == (0, 1)
    assert db.row(job_id).last_error.startswith("RuntimeError: after broke\n")


def test_outcome_is_not_written_when_the_lock_was_lost(db: DB) -> None:
    reg = Registry()

    def stolen(j: Job) -> None:
        db.update(j.id, locked_by="delayed_job host:y pid:9")
        raise RuntimeError("too late")

    reg.run("J")(stolen)
    job_id = db.insert(obj("J"))
    assert worker(db, reg).work_off() == (0, 1)
    row = db.row(job_id)
    assert (row.locked_by, row.attempts, row.last_error) == ("delayed_job host:y pid:9", 0, None)


def test_row_deleted_by_rails_while_running_is_left_alone(db: DB) -> None:
    reg = Registry()

    def vanish(j: Job) -> None:
        with db.engine.begin() as conn:
            conn.execute(db.t.delete().where(db.t.c.id == j.id))

    reg.run("J")(vanish)
    db.insert(obj("J"))
    nxt = db.insert(obj("J"))
    assert worker(db, reg).work_off(1) == (1, 0)
    assert db.row(nxt) is not None


def test_last_error_is_clipped_to_the_column(db: DB) -> None:
    reg = Registry()

    def huge(j: Job) -> None:
        raise ValueError("é" * 100_000)

    reg.run("J")(huge)
    job_id = db.insert(obj("J"))
    worker(db, reg).work_off()
    stored = db.row(job_id).last_error
    if db.backend == "mariadb":
        assert len(stored.encode()) <= 65535
        assert stored.startswith("ValueError: " + "é" * 1000)
    else:
        assert stored.startswith("ValueError: " + "é" * 100_000)
