"""What a new user meets first (issue #14): the error in the outcome log lines, the testing
helpers used from a user's own pytest suite, and "*" hooks in a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dj_consumer import Job, Registry
from dj_consumer.testing import JobTable
from tests.conftest import DB, clean_env
from tests.integration.test_protocol import obj

FAILING = textwrap.dedent("""
    from dj_consumer import job

    @job.run("SignupJob")
    def run(j):
        {}["email"]
""")


def work(db: DB, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "failjobs.py").write_text(FAILING)
    return subprocess.run(
        [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", db.url,
         "--table-name", db.table, "--import", "failjobs", "--exit-on-complete",
         "--sleep-delay", "0.05", *flags],
        capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=120)


def test_json_outcome_lines_carry_class_message_and_traceback(sqlite_db: DB,
                                                               tmp_path: Path) -> None:
    sqlite_db.insert(obj("SignupJob"))
    sqlite_db.insert(obj("SignupJob"), attempts=24)  # its last attempt: job.failed
    out = work(sqlite_db, tmp_path, "--log-format", "json")
    assert out.returncode == 0, out.stderr
    events = {e["event"]: e for e in map(json.loads, out.stderr.splitlines())}
    for name in ("job.rescheduled", "job.failed"):
        line = events[name]
        assert (line["error_class"], line["error"]) == ("KeyError", "'email'"), line
        assert line["exception"].startswith("Traceback (most recent call last):"), line
        assert 'failjobs.py", line 6, in run' in line["exception"]
        assert line["exception"].rstrip().endswith("KeyError: 'email'")


def test_console_outcome_lines_stay_one_line(sqlite_db: DB, tmp_path: Path) -> None:
    sqlite_db.insert(obj("SignupJob"))
    out = work(sqlite_db, tmp_path, "--log-format", "console")
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stderr.splitlines() if "job.rescheduled" in x]
    assert "error_class=KeyError" in line and "error=\"'email'\"" in line, line
    assert "Traceback" not in out.stderr
    # last_error: Python's own "Class: message" line (Ruby 4.1.9 writes the message alone,
    # which for a KeyError is just 'email'), a newline, the backtrace
    assert sqlite_db.row(1).last_error.startswith(
        "KeyError: 'email'\nTraceback (most recent call last):")


USER_JOBS = textwrap.dedent("""
    from dj_consumer import FailJob, job

    SENT = []

    @job.run("NewsletterJob", max_attempts=3)
    def newsletter(j):
        if j.payload["list_id"] < 0:
            raise FailJob("no such list")
        SENT.append(j.payload["list_id"])
""")

USER_TESTS = textwrap.dedent("""
    from dj_consumer.testing import Failed, Succeeded, run_inline

    import myjobs

    def test_inline():
        assert run_inline("NewsletterJob", {"list_id": 7}) == Succeeded()
        out = run_inline("NewsletterJob", {"list_id": -1})
        assert isinstance(out, Failed) and out.last_error.startswith("dj_consumer.errors.FailJob: no such list")

    def test_through_a_table(dj_table):
        ok = dj_table.enqueue("NewsletterJob", {"list_id": 8})
        bad = dj_table.enqueue("NewsletterJob", {"list_id": -2})
        assert dj_table.work_off() == (1, 1)
        assert 8 in myjobs.SENT
        [row] = dj_table.rows()
        assert row.id == bad and row.failed_at is not None and ok != bad

    def test_fresh_registry(dj_registry):
        assert dj_registry.names() == []
""")


def test_a_users_own_suite_uses_the_helpers_and_the_fixture(tmp_path: Path) -> None:
    (tmp_path / "myjobs.py").write_text(USER_JOBS)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["dj_consumer.pytest_plugin"]\n')
    (tmp_path / "test_myjobs.py").write_text(USER_TESTS)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-W", "error", "test_myjobs.py"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env=clean_env(PYTHONPATH=str(tmp_path)))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "3 passed" in out.stdout


def test_star_hooks_in_a_real_worker_including_an_unparseable_row(tmp_path: Path) -> None:
    reg, reported = Registry(), []

    @reg.error("*")
    def report(j: Job, exc: BaseException) -> None:
        reported.append(("error", j.id, type(exc).__name__))

    @reg.failure("*")
    def gave_up(j: Job, exc: BaseException) -> None:
        reported.append(("failure", j.id, type(exc).__name__))

    reg.run("ImportJob")(lambda j: 1 / 0)
    reg.run("Billing::ChargeJob")(lambda j: None)
    with JobTable(tmp_path, registry=reg) as table:
        failing = table.enqueue("ImportJob", {"path": "a.csv"})
        table.enqueue("Billing::ChargeJob", {"cents": 5})
        # An ActiveJob row of ours whose arguments Ruby could not load either.
        broken = table.insert_handler(
            "--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper\n"
            "job_data:\n  job_class: Billing::ChargeJob\n  arguments: [\n")
        assert table.work_off() == (1, 2)
        rows = {r.id: r for r in table.rows()}
    assert sorted(reported) == [("error", failing, "ZeroDivisionError"),
                                ("failure", broken, "HandlerParseError")]
    assert rows[failing].attempts == 1 and rows[broken].failed_at is not None


REPORTING = textwrap.dedent("""
    from dj_consumer import FailJob, job
    from dj_consumer.testing import run_inline
    from sample_jobs import error_reporting

    @job.run("ChargeJob", max_attempts=2)
    def charge(j):
        raise ValueError("card declined")

    @job.error("ChargeJob")
    def own(j, exc):
        print("own error hook first")

    run_inline("ChargeJob", {"id": 1}, id=41)               # attempt 1 of 2: retried
    run_inline("ChargeJob", {"id": 1}, id=41, attempts=1)   # attempt 2 of 2: fails for good
    for e in error_reporting.client.events:
        print(e["level"], type(e["exception"]).__name__, e["tags"]["job.name"],
              e["context"]["attempt"], e["context"]["job_id"])
""")


def test_the_error_reporting_example_reports_attempts_and_failures(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", REPORTING], capture_output=True, text=True,
                         env=clean_env(), cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "own error hook first", "own error hook first",
        "warning ValueError ChargeJob 1 41",
        "warning ValueError ChargeJob 2 41",
        "error ValueError ChargeJob 2 41",
    ], out.stdout
