"""The operator's view: `status`, `jobs` filters, and `failed list|show|retry|delete`, on SQLite,
MariaDB and PostgreSQL, with the handler shapes Rails writes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from dj_consumer.clock import SystemClock
from tests.conftest import DB, ROOT, clean_env
from tests.integration.test_cli_tools import cli_here
from tests.integration.test_protocol import obj

WRAPPER = ("--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper\n"
           "job_data:\n  job_class: {cls}\n  job_id: {uid}\n  provider_job_id:\n"
           "  queue_name: mail\n  priority:\n  arguments:\n  - {arg}\n  executions: 0\n"
           "  exception_executions: {{}}\n  locale: en\n  timezone: UTC\n"
           "  enqueued_at: '2026-01-01T00:00:00Z'\n")
PERFORMABLE = ("--- !ruby/object:Delayed::PerformableMethod\nobject: !ruby/object:User\n"
               "  raw_attributes:\n    id: {uid}\n    email: u{uid}@example.com\n"
               "method_name: :{method}\nargs:\n- en\n")
MAILER = ("--- !ruby/object:Delayed::PerformableMailer\nobject: !ruby/class 'UserMailer'\n"
          "method_name: :welcome\nargs:\n- {uid}\n")
HANDLERS = 'from dj_consumer import job\n\n@job.run("NewsletterJob")\ndef n(j): pass\n'


def cli(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dj_consumer.cli", *args], capture_output=True,
                          text=True, env=clean_env(), cwd=cwd, timeout=120, input=stdin)


def fill(db: DB) -> dict[str, int]:
    """A table with one of each state, over object, struct, ActiveJob and `.delay` handlers."""
    now = SystemClock().now().replace(microsecond=0)
    ids = {}
    ids["ready_old"] = db.insert(obj("NewsletterJob", list_id=1), run_at=now - timedelta(hours=2))
    ids["ready"] = db.insert(obj("NewsletterJob", list_id=2), queue="mail")
    ids["scheduled"] = db.insert(obj("NewsletterJob", list_id=3), run_at=now + timedelta(hours=1))
    ids["running"] = db.insert(obj("NewsletterJob", list_id=4), locked_by="py host:a pid:1",
                               locked_at=now - timedelta(minutes=3))
    ids["stale_lock"] = db.insert(obj("NewsletterJob", list_id=5), locked_by="dj host:b pid:2",
                                  locked_at=now - timedelta(hours=5))
    ids["failed"] = db.insert(obj("NewsletterJob", list_id=6), failed_at=now, attempts=25,
                              last_error="KeyError: 'email'\n/app/jobs.py:3:in `perform'")
    for i in range(3):  # three ActiveJob rows of one class: one group, one name
        ids[f"aj{i}"] = db.insert(WRAPPER.format(cls="MailJob", uid=f"u-{i}", arg=i), queue="mail")
    ids["aj_failed"] = db.insert(WRAPPER.format(cls="MailJob", uid="u-9", arg=9), queue="mail",
                                 failed_at=now, attempts=1, last_error="boom")
    for i, method in enumerate(["send_welcome", "send_welcome", "send_bye"]):
        ids[f"pm{i}"] = db.insert(PERFORMABLE.format(uid=i, method=method))
    ids["mailer"] = db.insert(MAILER.format(uid=1), locked_by="delayed_job host:r pid:9",
                              locked_at=now - timedelta(seconds=30))
    ids["broken"] = db.insert("--- !ruby/object:BrokenJob\nx: [unclosed\n")
    return ids


def by_name(status: dict[str, Any]) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(n["queue"], n["name"]): n for n in status["names"]}


def test_status_counts_each_state_per_queue_and_name(db: DB, tmp_path: Path) -> None:
    fill(db)
    (tmp_path / "opjobs.py").write_text(HANDLERS)
    base = ["--database-url", db.url, "--table-name", db.table]
    out = cli_here("status", *base, "--json", "--import", "opjobs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    names = by_name(status)
    news = names[(None, "NewsletterJob")]
    assert (news["ready"], news["scheduled"], news["running"], news["failed"]) == (2, 1, 1, 1)
    assert news["python"] is True and news["oldest_ready_age_s"] >= 7190
    assert names[("mail", "NewsletterJob")]["ready"] == 1
    mail = names[("mail", "MailJob")]
    assert (mail["ready"], mail["failed"], mail["python"]) == (3, 1, False)
    assert names[(None, "User#send_welcome")]["ready"] == 2
    assert names[(None, "User#send_bye")]["ready"] == 1
    assert names[(None, "UserMailer.welcome")]["running"] == 1
    assert names[(None, "BrokenJob (unparseable)")]["ready"] == 1
    workers = {w["locked_by"]: w for w in status["workers"]}
    assert set(workers) == {"py host:a pid:1", "delayed_job host:r pid:9"}  # not the stale lock
    assert 170 <= workers["py host:a pid:1"]["age_s"] <= 600
    text = cli_here("status", *base, "--import", "opjobs", cwd=tmp_path).stdout
    assert "NewsletterJob" in text and "ruby only" in text and "python" in text
    assert "locks held (live):" in text and "delayed_job host:r pid:9" in text
    assert "total: 10 ready, 1 scheduled, 2 running, 2 failed" in text


def test_jobs_filters_count_and_json(db: DB) -> None:
    ids = fill(db)
    base = ["--database-url", db.url, "--table-name", db.table, "--json"]

    def jobs(*extra: str) -> dict[str, Any]:
        out = cli_here("jobs", *base, *extra)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    everything = jobs()
    assert everything["total"] == db.count() == 15
    assert {j["id"] for j in jobs("--state", "failed")["jobs"]} == {ids["failed"], ids["aj_failed"]}
    assert {j["id"] for j in jobs("--state", "running")["jobs"]} == {ids["running"], ids["mailer"]}
    assert {j["id"] for j in jobs("--state", "scheduled")["jobs"]} == {ids["scheduled"]}
    ready = jobs("--state", "ready", "--limit", "2")
    assert ready["total"] == 10 and len(ready["jobs"]) == 2
    assert ready["jobs"][0]["id"] == ids["ready_old"]  # priority, then run_at: as workers take them
    mail = jobs("--queue", "mail", "--name", "MailJob")
    assert mail["total"] == 4 and {j["name"] for j in mail["jobs"]} == {"MailJob"}
    assert jobs("--queue", "nil", "--name", "User#send_welcome")["total"] == 2
    assert jobs("--name", "NewsletterJob", "--state", "ready")["total"] == 3
    text = cli_here("jobs", *base[:-1], "--limit", "3").stdout
    assert "3 rows shown of 15" in text


def test_failed_list_show_retry_delete(db: DB) -> None:
    ids = fill(db)
    base = ["--database-url", db.url, "--table-name", db.table]
    listed = json.loads(cli_here("failed", "list", "--json", *base).stdout)
    assert listed["total"] == 2
    only = json.loads(cli_here("failed", "list", "--name", "MailJob", "--json", *base).stdout)
    assert [j["id"] for j in only["jobs"]] == [ids["aj_failed"]]
    assert json.loads(cli_here("failed", "--since", "1h", "--json", *base).stdout)["total"] == 2

    shown = json.loads(cli_here("failed", "show", str(ids["failed"]), "--json", *base).stdout)
    assert shown["last_error"] == "KeyError: 'email'\n/app/jobs.py:3:in `perform'"
    assert shown["payload"] == {"list_id": 6} and shown["handler"].startswith("--- !ruby/object")
    text = cli_here("failed", "show", str(ids["failed"]), *base).stdout
    assert "/app/jobs.py:3:in `perform'" in text and "list_id" in text

    out = cli_here("failed", "retry", str(ids["failed"]), str(ids["ready"]), *base)
    assert out.returncode == 1
    assert "1 job will run again; 1 job left alone (not failed" in out.stdout
    row = db.row(ids["failed"])
    assert (row.attempts, row.failed_at, row.last_error, row.locked_by) == (0, None, None, None)
    assert row.run_at is not None

    out = cli_here("failed", "delete", "--all", "--name", "MailJob", *base, stdin="n\n")
    assert out.returncode == 1 and "nothing deleted" in out.stdout
    assert db.row(ids["aj_failed"]) is not None
    out = cli_here("failed", "delete", "--all", "--queue", "mail", *base, stdin="y\n")
    assert out.returncode == 0 and "1 job deleted" in out.stdout, out.stderr
    assert db.row(ids["aj_failed"]) is None and db.count() == 14


def test_retry_leaves_a_row_a_live_worker_holds(db: DB) -> None:
    now = SystemClock().now().replace(microsecond=0)
    ruby_failed = db.insert(obj("J"), failed_at=now, attempts=25, last_error="x",
                            locked_by="delayed_job host:r pid:1", locked_at=now - timedelta(minutes=1))
    held = db.insert(obj("J"), failed_at=now - timedelta(minutes=10), attempts=3, last_error="x",
                     locked_by="py host:a pid:1", locked_at=now - timedelta(minutes=1))
    base = ["--database-url", db.url, "--table-name", db.table]
    out = cli_here("failed", "retry", "--all", "--name", "J", *base)
    # Ruby keeps locked_by when it fails a job: that lock is the failed run's, not a live one.
    assert "1 job will run again; 1 job left alone" in out.stdout, out.stderr
    assert db.row(ruby_failed).failed_at is None and db.row(held).failed_at is not None
    out = cli_here("failed", "delete", str(held), "--yes", *base)
    assert out.returncode == 1 and "0 jobs deleted" in out.stdout
    assert db.row(held) is not None


def test_retry_alias_from_the_readme(sqlite_db: DB) -> None:
    now = SystemClock().now()
    failed = sqlite_db.insert(obj("J"), failed_at=now, attempts=25, last_error="x")
    base = ["--database-url", sqlite_db.url, "--table-name", sqlite_db.table]
    out = cli_here("failed", "--retry", str(failed), *base)
    assert out.returncode == 0 and out.stdout.strip() == f"job {failed} will run again"
    assert sqlite_db.row(failed).failed_at is None


def test_status_watch_refreshes_in_place_until_interrupted(sqlite_db: DB) -> None:
    import signal
    import time

    sqlite_db.insert(obj("NewsletterJob"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dj_consumer.cli", "status", "--watch", "0.1", "--database-url",
         sqlite_db.url, "--table-name", sqlite_db.table], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while seen.count("\x1b[H\x1b[2J") < 3 and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert seen.count("\x1b[H\x1b[2J") >= 3 and "NewsletterJob" in seen
