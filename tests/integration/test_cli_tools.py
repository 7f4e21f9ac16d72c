"""The operator commands: parse, enqueue, jobs, failed --retry, schema."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from dj_consumer import enqueue, ruby_yaml
from dj_consumer.clock import SystemClock
from tests.conftest import DB, ROOT, clean_env
from tests.integration.test_protocol import obj

PERFORMABLE = (
    "--- !ruby/object:Delayed::PerformableMethod\nobject: !ruby/object:User\n  id: 12\n"
    "  email: ada@example.com\nmethod_name: :send_welcome\nargs:\n- en\n"
)


def cli(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dj_consumer.cli", *args], input=stdin,
                          capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=60)


def cli_here(*args: str, stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`cli`, run by cli.main in this process: the same parsing, output and exit code without
    a Python start-up per call (about a second each on a loaded machine). No DJ_* variables;
    stdin as given; in `cwd`. What a process would start afresh is made fresh and put back:
    the default registry (`--import` modules register into a new one), the modules it
    imported from `cwd` and the sys.path entries it added, logging. The installed program's own exit code and
    stderr are tests/integration/test_cli_errors.py's."""
    import contextlib
    import io
    import logging
    import os
    from unittest import mock

    import structlog

    import dj_consumer
    from dj_consumer import Registry
    from dj_consumer.cli import main

    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}
    modules, path, here = set(sys.modules), list(sys.path), os.getcwd()
    with mock.patch.dict(os.environ, env, clear=True), \
            mock.patch("sys.stdin", io.StringIO(stdin or "")), \
            mock.patch.object(dj_consumer, "job", Registry()), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if cwd is not None:
                os.chdir(cwd)
            code = main(list(args))
        finally:
            os.chdir(here)
            sys.path[:] = path
            for name in set(sys.modules) - modules:  # the --import modules from `cwd`
                file = getattr(sys.modules[name], "__file__", None) or ""
                if cwd is not None and file.startswith(str(cwd)):
                    del sys.modules[name]
            structlog.reset_defaults()
            root = logging.getLogger()
            for handler in [h for h in root.handlers if h.get_name() == "dj-consumer"]:
                root.removeHandler(handler)
            logging.captureWarnings(False)
    return subprocess.CompletedProcess(["dj-consumer", *args], code, out.getvalue(),
                                       err.getvalue())


def test_parse_from_stdin_file_and_table(sqlite_db: DB, tmp_path: Path) -> None:
    out = cli("parse", stdin=PERFORMABLE)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["name"] == "User#send_welcome" and data["display_name"] == "User#send_welcome"
    assert data["payload"]["args"] == ["en"] and data["payload"]["method_name"] == "send_welcome"

    path = tmp_path / "h.yml"
    path.write_text(obj("NewsletterJob", list_id=7))
    assert json.loads(cli("parse", str(path)).stdout)["payload"] == {"list_id": 7}

    job_id = sqlite_db.insert(PERFORMABLE)
    out = cli("parse", "--id", str(job_id), "--database-url", sqlite_db.url,
              "--table-name", sqlite_db.table, "--import", "sample_jobs")
    assert json.loads(out.stdout)["registered"] is True

    bad = cli("parse", stdin="--- !ruby/object:Broken\nx: [\n")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["fallback_name"] == "Broken"


def test_enqueue_writes_a_row_we_read_back(db: DB) -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5)
    job_id = enqueue(db.config(), "ReportJob", {"kind": "monthly", "year": 2026},
                     queue="reports", priority=3, run_at=run_at)
    row = db.row(job_id)
    assert (row.queue, row.priority, row.attempts, row.run_at) == ("reports", 3, 0, run_at)
    parsed = ruby_yaml.load(row.handler)
    assert parsed.name == "ReportJob" and parsed.payload == {"kind": "monthly", "year": 2026}
    assert row.created_at is not None and row.updated_at is not None


def test_enqueue_cli_shapes(sqlite_db: DB) -> None:
    base = ["--database-url", sqlite_db.url, "--table-name", sqlite_db.table]
    for shape, expect in [("struct", "--- !ruby/struct:Ping"), ("object", "--- !ruby/object:Ping"),
                          ("active_job", "--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper")]:
        payload = '["a", 1]' if shape == "active_job" else '{"a": 1}'
        out = cli("enqueue", "Ping", "--as", shape, "--payload", payload, "--json", *base)
        assert out.returncode == 0, out.stderr
        row = sqlite_db.row(json.loads(out.stdout)["id"])
        assert row.handler.startswith(expect)
        assert ruby_yaml.load(row.handler).name == "Ping"
    payload = sqlite_db.url.removeprefix("sqlite:///") + ".json"
    Path(payload).write_text('{"from": "a file"}')
    out = cli("enqueue", "Ping", "--payload", f"@{payload}", "--json", *base)
    assert ruby_yaml.load(sqlite_db.row(json.loads(out.stdout)["id"]).handler).payload == \
        {"from": "a file"}
    out = cli("enqueue", "Ping", "--payload", "-", "--json", *base, stdin='{"from": "stdin"}')
    assert ruby_yaml.load(sqlite_db.row(json.loads(out.stdout)["id"]).handler).payload == \
        {"from": "stdin"}
    out = cli("enqueue", "Ping", "--payload", '{"a": 1}', *base)
    assert out.stdout.strip().endswith(" Ping"), out.stdout  # id, then Delayed::Job#name
    bad = cli("enqueue", "Ping", "--payload", "{nope", *base)
    assert bad.returncode == 2 and "--payload is not JSON" in bad.stderr


def test_jobs_and_failed_retry(sqlite_db: DB) -> None:
    base = ["--database-url", sqlite_db.url, "--table-name", sqlite_db.table]
    now = SystemClock().now()
    waiting = sqlite_db.insert(obj("NewsletterJob"))
    failed = sqlite_db.insert(obj("DoomedJob"), failed_at=now, attempts=25, last_error="boom\nat x")
    out = cli("jobs", *base).stdout
    assert "NewsletterJob" in out and "ready" in out and "failed" in out and "boom" in out
    out = cli("failed", *base).stdout
    assert "DoomedJob" in out and "NewsletterJob" not in out
    assert cli("failed", "--retry", str(failed), *base).returncode == 0
    row = sqlite_db.row(failed)
    assert (row.failed_at, row.attempts, row.locked_by) == (None, 0, None)
    retry_missing = cli("failed", "--retry", str(waiting), *base)
    assert retry_missing.returncode == 2 and f"no failed row with id {waiting}" in retry_missing.stderr


def test_schema_create_makes_rails_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    assert "CREATE TABLE delayed_jobs" in cli("schema", "--database-url", url).stdout
    assert cli("schema", "--create", "--database-url", url).returncode == 0
    engine = sa.create_engine(url)
    insp = sa.inspect(engine)
    assert {c["name"] for c in insp.get_columns("delayed_jobs")} >= {"handler", "locked_by", "queue"}
    assert [i["column_names"] for i in insp.get_indexes("delayed_jobs")] == [["priority", "run_at"]]
    engine.dispose()


def test_help_teaches() -> None:
    out = cli("--help").stdout
    for word in ("work", "parse", "enqueue", "jobs", "failed", "check", "why", "DJ_DATABASE_URL"):
        assert word in out
    work = cli("work", "--help").stdout
    for flag in ("--queues", "--min-priority", "--max-priority", "--sleep-delay", "--read-ahead",
                 "--exit-on-complete", "--concurrency", "--import", "--worker-id",
                 "--max-attempts", "--max-run-time", "[DJ_QUEUES]"):
        assert flag in work


def test_demo_runs_from_a_fresh_directory(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sample_jobs.demo"], capture_output=True,
                         text=True, env=clean_env(), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "succeeded:   3" in out.stdout
    assert "rescheduled: 2" in out.stdout
    assert "failed:      1" in out.stdout
    assert "untouched:   1" in out.stdout
