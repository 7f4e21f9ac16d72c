"""`dj-consumer schema --runs`, `runs`, `runs show`, `cancel` as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from dj_consumer.clock import SystemClock
from dj_consumer.runs.records import result_json
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, job, runs_tables
from tests.integration.test_cli_tools import cli

HANDLER = "--- !ruby/object:ReportJob\nyear: 2026\n"


def flags(rdb: RunsDB) -> list[str]:
    return ["--database-url", rdb.db.url, "--table-name", rdb.db.table,
            "--runs-table", rdb.runs, "--batches-table", rdb.batches]


@pytest.fixture
def rdb(sqlite_db: DB) -> Iterator[RunsDB]:
    """The commands are the API's (tested on every database) plus printing: SQLite will do."""
    with runs_tables(sqlite_db) as r:
        yield r


def now() -> datetime:
    return SystemClock().now().replace(microsecond=0)


def test_schema_create_runs_makes_the_three_tables_once(db: DB) -> None:
    args = ["schema", "--runs", "--database-url", db.url, "--runs-table", f"{db.table}_r",
            "--batches-table", f"{db.table}_b"]
    try:
        printed = cli(*args)
        assert printed.returncode == 0, printed.stderr
        assert f"CREATE TABLE {db.table}_r" in printed.stdout.replace('"', "").replace("`", "")
        made = cli(*args, "--create")
        assert made.returncode == 0, made.stderr
        assert made.stdout.splitlines() == [f"table {db.table}_r created", f"table {db.table}_b created",
                                            f"table {db.table}_b_parts created"]
        again = cli(*args, "--create")
        assert again.stdout.splitlines()[0] == f"table {db.table}_r exists"
        assert sa.inspect(db.engine).has_table(f"{db.table}_b_parts")
    finally:
        from dj_consumer.runs import schema

        for table in reversed(schema.tables(f"{db.table}_r", f"{db.table}_b")):
            table.drop(db.engine, checkfirst=True)


def test_schema_runs_rails_needs_no_database() -> None:
    out = cli("schema", "--runs", "--rails", "--runs-table", "job_runs")
    assert out.returncode == 0, out.stderr
    assert "create_table :job_runs, id: false do |t|" in out.stdout
    assert "t.bigint :job_id, null: false, primary_key: true, default: nil" in out.stdout
    wrong = cli("schema", "--rails", "--database-url", "sqlite:///x.db")
    assert wrong.returncode == 2 and "(--runs)" in wrong.stderr, wrong.stderr
    assert "give one of them too" in wrong.stderr, wrong.stderr


def test_runs_lists_and_shows_records(rdb: RunsDB) -> None:
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(1, {"run_key": "k1"}), now())
        rdb.store.progress(conn, 1, 2, 5, "upload", now=now())
        rdb.store.start(conn, job(2, name="Other"), now())
        rdb.store.finish(conn, 2, "succeeded", attempts=0, now=now(),
                         result=result_json({"url": "s3://x"}))
    out = cli("runs", *flags(rdb))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["job", "name", "state", "att", "progress", "updated", "(UTC)", "note"]
    assert any(line.split()[:5] == ["1", "ReportJob", "running", "0", "2/5"] for line in lines)
    assert lines[-1] == "2 records"
    only = json.loads(cli("runs", "--state", "succeeded", "--json", *flags(rdb)).stdout)
    assert [(r["job_id"], r["result"]) for r in only] == [(2, {"url": "s3://x"})]
    keyed = json.loads(cli("runs", "list", "--run-key", "k1", "--json", *flags(rdb)).stdout)
    assert [r["job_id"] for r in keyed] == [1]
    shown = cli("runs", "show", "2", *flags(rdb))
    assert shown.returncode == 0, shown.stderr
    assert "state:               succeeded" in shown.stdout and '"url": "s3://x"' in shown.stdout
    missing = cli("runs", "show", "99", *flags(rdb))
    assert missing.returncode == 1 and "no run record for job 99" in missing.stderr


def test_cancel_prints_what_happened(rdb: RunsDB) -> None:
    waiting = rdb.db.insert(HANDLER)
    running = rdb.db.insert(HANDLER, locked_by="py host:h pid:1", locked_at=now())
    out = cli("cancel", str(waiting), *flags(rdb))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"job {waiting} was waiting: deleted; its run record says cancelled"
    out = cli("cancel", str(running), "--json", *flags(rdb))
    assert json.loads(out.stdout)["outcome"] == "requested" and out.returncode == 0
    kept = rdb.db.insert(HANDLER)
    out = cli("cancel", str(kept), "--keep", *flags(rdb))
    assert "kept as failed (last_error 'cancelled')" in out.stdout
    gone = cli("cancel", "123456", *flags(rdb))
    assert gone.returncode == 1 and gone.stdout.strip() == "there is no job 123456"


def test_runs_without_the_table_is_one_line(sqlite_db: DB) -> None:
    out = cli("runs", "--database-url", sqlite_db.url, "--runs-table", "nothing_here")
    assert out.returncode == 2
    assert out.stderr.startswith("dj-consumer: error: there is no run records table 'nothing_here'")
