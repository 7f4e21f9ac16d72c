"""Rows dj_consumer rescheduled or failed read, in Ruby, exactly like rows Ruby wrote.

Each test lets a Ruby worker and a Python worker handle the same kind of failure on two twin
rows, then asks Ruby (Delayed::Job#failed?, attempts, run_at, last_error, name, and
ready_to_run) about both and compares field by field. The only allowed difference is the one
the README documents: a row Ruby fails for good keeps Ruby's locked_by/locked_at until that
Ruby worker exits (Delayed::Plugins::ClearLocks); ours is unlocked at once (both fleets
ignore failed rows anyway).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dj_consumer import Registry, Worker, make_worker
from tests.interop import pyjobs
from tests.interop.conftest import Interop
from tests.interop.helpers import ruby_time

pytestmark = pytest.mark.ruby


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def py_worker(interop: Interop) -> Iterator[Any]:
    """make_py(**config) → an in-process Worker with the pyjobs handlers; closed afterwards."""
    made: list[Worker] = []

    def make_py(**overrides: Any) -> Worker:
        registry = Registry()
        pyjobs.register(registry, interop.runs)
        config = interop.db.config(**{"worker_id": "py", **overrides})
        worker = make_worker(config, registry)
        made.append(worker)
        return worker

    yield make_py
    for worker in made:
        worker.close()


def by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in rows}


def first_line(text: str | None) -> str | None:
    return None if text is None else text.split("\n", 1)[0]


def assert_same_view(ruby_row: dict[str, Any], py_row: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """Ruby's view of two rows agrees on everything a Rails app or a Ruby worker looks at."""
    for key in ("name", "failed", "attempts", "queue", "priority", "max_attempts", "ready"):
        if key not in skip:
            assert ruby_row[key] == py_row[key], f"{key}: ruby wrote {ruby_row[key]!r}, we wrote {py_row[key]!r}"
    # Ruby 4.1.9 writes the message alone on last_error's first line; we write Python's own
    # "Class: message" line. Both sides raise a RuntimeError with the same message here.
    ruby_first, py_first = first_line(ruby_row["last_error"]), first_line(py_row["last_error"])
    if ruby_first is None:
        assert py_first is None
    else:
        assert py_first == f"RuntimeError: {ruby_first}", (ruby_first, py_first)
    assert (ruby_row["failed_at"] is None) == (py_row["failed_at"] is None)


def test_a_rescheduled_row_reads_like_rubys(interop: Interop, py_worker: Any) -> None:
    """FlakyJob raises "boom" on both sides: attempts 1, run_at now + 1**4 + 5 s, unlocked."""
    rb_id, py_id = interop.ruby.enqueue([
        {"kind": "struct", "class": "FlakyJob", "args": {"key": "rb"}, "queue": "rq"},
        {"kind": "struct", "class": "FlakyJob", "args": {"key": "py"}, "queue": "pq"},
    ])
    before = utcnow()
    interop.ruby.work(queues=["rq"], work_off=1, exit_on_complete=False)
    assert py_worker(queues=["pq"]).work_off(1) == (0, 1)
    after = utcnow()

    rows = by_id(interop.ruby.inspect([rb_id, py_id]))
    rb, py = rows[rb_id], rows[py_id]
    assert_same_view(rb, py, skip=("queue",))
    assert rb["attempts"] == py["attempts"] == 1
    assert rb["failed"] is py["failed"] is False
    assert rb["ready"] is py["ready"] is False  # run_at is in the future for Ruby's ready_to_run
    assert first_line(rb["last_error"]) == "boom"
    assert first_line(py["last_error"]) == "RuntimeError: boom"
    assert len(py["last_error"].splitlines()) > 1, "class: message, newline, backtrace"
    for row in (rb, py):
        assert row["locked_by"] is None and row["locked_at"] is None, row
        run_at = ruby_time(row["run_at"])
        assert run_at is not None
        # Delayed::Backend::Base#reschedule_at: now + attempts**4 + 5 (MySQL drops fractions)
        slack = timedelta(seconds=1)
        assert before + timedelta(seconds=6) - slack <= run_at <= after + timedelta(seconds=6) + slack
        if interop.backend == "mariadb":
            assert run_at.microsecond == 0
    assert {r.job_key: r.runner for r in interop.runs.performed()} == {"rb": "ruby", "py": "python"}


@pytest.mark.parametrize("how", ["payload_max_attempts", "worker_max_attempts"])
def test_a_failed_row_reads_like_rubys(interop: Interop, py_worker: Any, how: str) -> None:
    """Attempts used up: failed? true, failed_at now, attempts counted, last_error "boom".

    payload_max_attempts: OneShotJob says max_attempts 1 (Ruby's payload method; our
    job.run(max_attempts=1)). worker_max_attempts: a FlakyJob with one prior failure on
    workers with max_attempts 2.
    """
    cls, worker_max = ("OneShotJob", None) if how == "payload_max_attempts" else ("FlakyJob", 2)
    rb_id, py_id = interop.ruby.enqueue([
        {"kind": "struct", "class": cls, "args": {"key": "rb", "message": "boom"}, "queue": "rq"},
        {"kind": "struct", "class": cls, "args": {"key": "py", "message": "boom"}, "queue": "pq"},
    ])
    if worker_max:
        for job_id in (rb_id, py_id):
            interop.db.update(job_id, attempts=1, last_error="an earlier boom")
    before = utcnow().replace(microsecond=0)
    interop.ruby.work(queues=["rq"], work_off=1, exit_on_complete=False, max_attempts=worker_max)
    overrides = {"max_attempts": worker_max} if worker_max else {}
    assert py_worker(queues=["pq"], **overrides).work_off(1) == (0, 1)
    after = utcnow() + timedelta(seconds=1)

    rows = by_id(interop.ruby.inspect([rb_id, py_id]))
    rb, py = rows[rb_id], rows[py_id]
    assert_same_view(rb, py, skip=("queue",))
    expected_attempts = 1 if worker_max is None else 2
    assert rb["failed"] is py["failed"] is True
    assert rb["attempts"] == py["attempts"] == expected_attempts
    assert rb["max_attempts"] == py["max_attempts"] == (1 if worker_max is None else None)
    for row in (rb, py):
        failed_at = ruby_time(row["failed_at"])
        assert failed_at is not None and before <= failed_at <= after, row
        assert first_line(row["last_error"]) == ("boom" if row is rb else "RuntimeError: boom")
        assert row["ready"] is False
    # Delayed::Worker#failed saves the row still locked by Ruby, but its ClearLocks plugin
    # unlocks it when the worker exits (as harness.rb's --work-off does), so once the Ruby
    # worker is gone both rows are unlocked; ours was unlocked at once.
    for row in (rb, py):
        assert row["locked_by"] is None and row["locked_at"] is None, row
    # Neither side runs a failed row again.
    interop.ruby.work(queues=["rq", "pq"], work_off=5, exit_on_complete=False)
    assert py_worker(worker_id="py2").work_off(5) == (0, 0)
    assert sorted(r.job_key for r in interop.runs.performed()) == ["py", "rb"]


BROKEN = {
    "struct": ("--- !ruby/struct:SharedJob\nkey: [unclosed\n", "SharedJob"),
    # Named by Ruby after the wrapper; by us after job_class / receiver#method (ours).
    "active_job": ("--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper\n"
                   "job_data:\n  job_class: SharedJob\n  arguments: [unclosed\n",
                   "ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper"),
    "record_without_id": ("--- !ruby/object:Delayed::PerformableMethod\n"
                          "object: !ruby/ActiveRecord:Greeter\n attributes:\n id: 1\n"
                          "method_name: :greet\nargs: []\n", "Delayed::PerformableMethod"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_an_unparseable_handler_fails_like_rubys_deserialization_error(
    interop: Interop, py_worker: Any, kind: str
) -> None:
    """A handler of ours Psych cannot load: failed at once, attempts unchanged, not retried."""
    broken, name = BROKEN[kind]
    now = utcnow().replace(microsecond=0)
    rb_id = interop.db.insert(broken, queue="rq", run_at=now, attempts=2)
    py_id = interop.db.insert(broken, queue="pq", run_at=now, attempts=2)
    interop.ruby.work(queues=["rq"], work_off=1, exit_on_complete=False)
    assert py_worker(queues=["pq"]).work_off(1) == (0, 1)

    rows = by_id(interop.ruby.inspect([rb_id, py_id]))
    rb, py = rows[rb_id], rows[py_id]
    assert rb["name"] == py["name"] == name  # Ruby's ParseObjectFromYaml fallback
    assert rb["failed"] is py["failed"] is True
    assert rb["attempts"] == py["attempts"] == 2
    for row in (rb, py):
        assert row["last_error"].startswith("Job failed to load: "), row["last_error"][:200]
        assert "Handler: " in row["last_error"]
    assert interop.runs.performed() == []


def test_each_side_finishes_a_job_the_other_rescheduled(interop: Interop, py_worker: Any) -> None:
    """SharedJob failing only in Python is finished by Ruby, and vice versa, at attempt 2."""
    to_ruby, to_python = interop.ruby.enqueue([
        {"kind": "struct", "class": "SharedJob", "args": {"key": "a", "fail_on": "python"},
         "queue": "pq"},
        {"kind": "struct", "class": "SharedJob", "args": {"key": "b", "fail_on": "ruby"},
         "queue": "rq"},
    ])
    assert py_worker(queues=["pq"]).work_off(1) == (0, 1)
    interop.ruby.work(queues=["rq"], work_off=1, exit_on_complete=False)
    rows = by_id(interop.ruby.inspect([to_ruby, to_python]))
    assert rows[to_ruby]["attempts"] == 1 and rows[to_python]["attempts"] == 1
    assert not rows[to_ruby]["ready"] and not rows[to_python]["ready"]

    run_at = max(ruby_time(r["run_at"]) or utcnow() for r in rows.values())
    time.sleep(max(0.0, (run_at - utcnow()).total_seconds()) + 1.1)

    # Now each side runs the row the other one rescheduled (the queues say which is whose).
    interop.ruby.work(queues=["pq"], work_off=1, exit_on_complete=False)
    assert py_worker(worker_id="py2", queues=["rq"]).work_off(1) == (1, 0)

    assert interop.db.rows() == []
    runs = [(r.job_key, r.runner, r.attempts) for r in interop.runs.performed()]
    assert sorted(runs) == [("a", "python", 0), ("a", "ruby", 1), ("b", "python", 1), ("b", "ruby", 0)]
