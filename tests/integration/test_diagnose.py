"""`dj-consumer check` and `dj-consumer why ID` against real tables."""

from __future__ import annotations

import json
import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from tests.conftest import DB
from tests.integration.test_cli_tools import cli_here
from tests.integration.test_cli_tools import cli_here as run
from tests.integration.test_protocol import obj


def test_check_recommends_the_queue_index_until_it_exists(db: DB) -> None:
    base = ["check", "--database-url", db.url, "--table-name", db.table]
    out = run(*base)
    assert out.returncode == 1, out.stderr
    assert "has every delayed_job column" in out.stdout
    assert "WARN  no --queues" in out.stdout
    assert f"add_index :{db.table}, [:queue, :priority, :run_at]" in out.stdout

    out = run(*base, "--queues", "python")
    assert out.returncode == 1
    assert "WARN  no index on (queue, priority, run_at)" in out.stdout
    assert f"CREATE INDEX index_{db.table}_on_queue_priority_run_at ON {db.table} (queue, priority, run_at);" in out.stdout

    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_{db.table}_q ON {db.table} (queue, priority, run_at)"))
    out = run(*base, "--queues", "python")
    assert "ok    index on (queue, priority, run_at) serves --queues" in out.stdout
    findings = json.loads(run(*base, "--queues", "python", "--json").stdout)
    assert {"level": "ok", "message": "index on (queue, priority, run_at) serves --queues",
            "fix": None} in findings
    assert "clock skew with the database" in out.stdout
    if db.backend != "sqlite":
        assert "supports SKIP LOCKED" in out.stdout
    assert out.returncode == 0, out.stdout


def test_check_reports_a_missing_column(db: DB) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} DROP COLUMN locked_by"))
    out = run("check", "--database-url", db.url, "--table-name", db.table)
    assert out.returncode == 2
    assert f"ERROR table '{db.table}' has no column locked_by" in out.stdout


def test_check_reports_a_missing_table(sqlite_db: DB) -> None:
    out = run("check", "--database-url", sqlite_db.url, "--table-name", "nope")
    assert out.returncode == 2
    assert "ERROR table 'nope' does not exist" in out.stdout


def test_check_on_an_unreachable_database_prints_one_line(tmp_path: Path) -> None:
    out = run("check", "--database-url", f"sqlite:///{tmp_path}/no_such_dir/jobs.db")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"dj-consumer: error: cannot reach the database at sqlite:///{tmp_path}/no_such_dir/jobs.db: "
        "unable to open database file"]


def test_worker_warns_once_at_start_when_it_will_scan(sqlite_db: DB, capsys: object) -> None:
    from dj_consumer import Registry, make_worker
    from dj_consumer.diagnose import BACKLOG_ROWS

    reg = Registry()
    reg.run("J")(lambda j: None)
    make_worker(sqlite_db.config(), reg).work_off()
    assert "worker.will_scan" not in capsys.readouterr().out  # type: ignore[attr-defined]
    # Only behind a backlog big enough for scanning it to matter.
    sqlite_db.insert_many([obj("RubyJob")] * BACKLOG_ROWS)
    make_worker(sqlite_db.config(), reg).work_off()
    with sqlite_db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_{sqlite_db.table}_q ON {sqlite_db.table} (queue, priority, run_at)"))
    make_worker(sqlite_db.config(queues=["python"]), reg).work_off()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("worker.will_scan") == 1


def test_the_backlog_count_is_bounded(db: DB) -> None:
    from dj_consumer.diagnose import backlog_at_least
    from dj_consumer.store import Store

    store = Store(Config.from_mapping(db.config()))
    db.insert_many([obj("RubyJob")] * 30)
    db.insert(obj("RubyJob"), failed_at=SystemClock().now())  # finished: not a backlog
    assert backlog_at_least(store, 30) and not backlog_at_least(store, 31)
    store.close()


HANDLERS = textwrap.dedent("""
    from dj_consumer import job

    @job.run("J")
    def j(job): pass
""")


def test_why_explains_each_reason(db: DB, tmp_path: Path) -> None:
    (tmp_path / "whyjobs.py").write_text(HANDLERS)
    now = SystemClock().now().replace(microsecond=0)
    ready = db.insert(obj("J"))
    failed = db.insert(obj("J"), failed_at=now, attempts=25, last_error="boom\ntrace")
    future = db.insert(obj("J"), run_at=now + timedelta(hours=2), attempts=3)
    locked = db.insert(obj("J"), locked_by="delayed_job host:r pid:7", locked_at=now - timedelta(minutes=5))
    other_queue = db.insert(obj("J"), queue="mail", priority=50)
    unknown = db.insert(obj("RubyOnly"))
    broken = db.insert("--- !ruby/object:J\nx: [unclosed\n")

    def why(job_id: int, *extra: str) -> subprocess.CompletedProcess[str]:
        return cli_here("why", str(job_id), "--database-url", db.url, "--table-name", db.table,
                        "--import", "whyjobs", *extra, cwd=tmp_path)

    out = why(ready)
    assert out.returncode == 0 and "is ready" in out.stdout, out.stderr
    assert "failed for good" in why(failed).stdout and "boom" in why(failed).stdout
    assert f"after 25 attempts: boom  (dj-consumer failed retry {failed})" in why(failed).stdout
    once = db.insert(obj("J"), failed_at=now, attempts=1, last_error="once")
    assert "after 1 attempt: once" in why(once).stdout
    assert json.loads(why(once, "--json").stdout)["ready"] is False
    out = why(future).stdout
    assert "UTC, in 120 min (rescheduled after 3 failed attempts)" in out or "UTC, in 119 min (rescheduled" in out
    out = why(locked).stdout
    assert "it is running: locked by 'delayed_job host:r pid:7' since " in out
    assert "(5 min ago)" in out and "(max_run_time)" in out
    out = why(other_queue, "--queues", "default,nil", "--max-priority", "10").stdout
    assert "queue 'mail' is not served by this config (--queues default, nil)" in out
    assert "priority 50 is above --max-priority 10" in out
    out = why(unknown).stdout
    assert "no Python handler for 'RubyOnly' in this process; registered: J" in out
    assert "cannot be parsed" in why(broken).stdout
    assert "no row with id 999999" in why(999999).stdout
