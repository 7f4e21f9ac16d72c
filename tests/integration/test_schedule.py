"""Issue 15: `dj_consumer.schedule` / `dj-consumer schedule` write recurring rows Ruby can
load (cron or reoccur_in), once per name and payload; `dj-consumer schedules` lists them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import dj_consumer
from dj_consumer import Job, Registry, make_worker, ruby_yaml
from dj_consumer import cron as cronlib
from dj_consumer.errors import ConfigError
from dj_consumer.scheduling import parse_every
from dj_consumer.schema import add_recurring_columns
from tests.conftest import DB
from tests.integration.test_cli_tools import cli_here as cli
from tests.integration.test_recurring_worker import as_dt, cols, db_now


@pytest.fixture
def rdb(db: DB) -> Iterator[DB]:
    add_recurring_columns(db.engine, db.table)
    yield db


@pytest.mark.parametrize(("value", "seconds"), [
    ("3h", 10800), ("90m", 5400), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    ("10800", 10800), ("PT3H", 10800), (timedelta(minutes=5), 300), (45, 45)])
def test_every_reads_short_iso_and_seconds(value: object, seconds: int) -> None:
    assert parse_every(value) == timedelta(seconds=seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["3x", "0", "-5", "PT0.5S", "P1M", "", "last_of_month"])
def test_every_refuses_what_is_not_whole_positive_seconds(value: str) -> None:
    with pytest.raises(ConfigError, match="every"):
        parse_every(value)


def test_schedule_every_writes_what_the_fork_writes_once(rdb: DB) -> None:
    cfg = rdb.config()
    before = db_now(rdb).replace(microsecond=0)
    first = dj_consumer.schedule(cfg, "Tick", {"to": "ops"}, every=timedelta(hours=3))
    again = dj_consumer.schedule(cfg, "Tick", {"to": "ops"}, every="3h")
    assert first.created and not again.created and not again.changed and again.id == first.id
    row = cols(rdb, first.id)
    assert (row.reoccur_in, row.cron, row.attempts, row.last_run_at) == ("10800", None, 0, None)
    assert before - timedelta(seconds=2) <= as_dt(row.run_at) <= db_now(rdb)
    parsed = ruby_yaml.load(rdb.row(first.id).handler)
    assert (parsed.name, parsed.payload) == ("Tick", {"to": "ops"})
    other = dj_consumer.schedule(cfg, "Tick", {"to": "dev"}, every="3h")
    assert other.created and other.id != first.id, "another payload is another schedule"
    changed = dj_consumer.schedule(cfg, "Tick", {"to": "ops"}, every="2h")
    assert changed.changed and cols(rdb, first.id).reoccur_in == "7200"
    assert rdb.count() == 2
    dup = dj_consumer.schedule(cfg, "Tick", {"to": "ops"}, every="2h", unique=False)
    assert dup.created and rdb.count() == 3


def test_schedule_cron_sets_run_at_to_the_next_time(rdb: DB) -> None:
    cfg = rdb.config()
    expr = "0 9 * * 1-5 Europe/Berlin"
    done = dj_consumer.schedule(cfg, "HelloJob", [1], cron=expr, shape="active_job")
    row = cols(rdb, done.id)
    assert (row.cron, row.reoccur_in, row.attempts) == (expr, None, 0)
    s = cronlib.parse(expr)
    assert as_dt(row.run_at) in {s.next_after(db_now(rdb) - timedelta(seconds=5)),
                                 s.next_after(db_now(rdb))}
    # Rails writes a new job_id per enqueue: still the same schedule (name + arguments).
    again = dj_consumer.schedule(cfg, "HelloJob", [1], cron=expr, shape="active_job")
    assert again.id == done.id and not again.changed
    moved = dj_consumer.schedule(cfg, "HelloJob", [1], cron="0 0 1 1 *", shape="active_job")
    assert moved.changed and as_dt(cols(rdb, done.id).run_at).strftime("%m-%d %H:%M") == "01-01 00:00"
    assert rdb.count() == 1


def test_two_deploys_at_once_write_one_row(rdb: DB) -> None:
    cfg = rdb.config()
    ids: list[int] = []
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            ids.append(dj_consumer.schedule(cfg, "Tick", {"n": 1}, cron="*/5 * * * *").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(ids)) == 1 and rdb.count() == 1


@pytest.mark.parametrize(("kwargs", "column"), [({"cron": "* * * * *"}, "cron"),
                                                ({"every": "1h"}, "reoccur_in")])
def test_schedule_on_a_table_without_the_column_says_what_to_add(
        db: DB, kwargs: dict[str, str], column: str) -> None:
    with pytest.raises(ConfigError, match=column):
        dj_consumer.schedule(db.config(), "Tick", **kwargs)  # type: ignore[arg-type]


def test_schedule_needs_one_rule(rdb: DB) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        dj_consumer.schedule(rdb.config(), "Tick")
    with pytest.raises(ConfigError, match="exactly one"):
        dj_consumer.schedule(rdb.config(), "Tick", every="1h", cron="* * * * *")
    with pytest.raises(ConfigError, match="invalid cron"):
        dj_consumer.schedule(rdb.config(), "Tick", cron="61 * * * *")


def test_a_scheduled_row_runs_and_stays(rdb: DB) -> None:
    reg, runs = Registry(), []

    @reg.run("Tick")
    def tick(j: Job) -> None:
        runs.append(j.id)

    done = dj_consumer.schedule(rdb.config(), "Tick", every="1h")
    w = make_worker(rdb.config(), reg)
    try:
        assert w.work_off(5) == (1, 0)
    finally:
        w.close()
    row = cols(rdb, done.id)
    assert runs == [done.id] and row.last_run_at is not None
    assert as_dt(row.run_at) == done.run_at.replace(microsecond=0) + timedelta(hours=1)  # type: ignore[union-attr]
    listed = dj_consumer.schedules(rdb.config())
    assert [(r.id, r.name, r.every) for r in listed] == [(done.id, "Tick", "3600")]
    assert listed[0].last_run is not None


def test_cli_schedule_and_schedules(rdb: DB) -> None:
    base = ["--database-url", rdb.url, "--table-name", rdb.table]
    out = cli("schedule", "Report", "--cron", "0 6 * * *", "--payload", '{"to": "ops"}', *base)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("created ") and "cron '0 6 * * *'" in out.stdout
    out = cli("schedule", "Report", "--cron", "0 6 * * *", "--payload", '{"to": "ops"}', *base,
              "--json")
    assert json.loads(out.stdout)["result"] == "unchanged"
    assert cli("schedule", "Sync", "--every", "15m", *base).returncode == 0
    out = cli("schedules", *base)
    assert out.returncode == 0, out.stderr
    assert "cron 0 6 * * *" in out.stdout and "every 900s" in out.stdout
    listed = json.loads(cli("schedules", *base, "--json").stdout)
    assert sorted(r["name"] for r in listed) == ["Report", "Sync"]
    assert {r["cron"] for r in listed} == {"0 6 * * *", None}


def test_cli_errors_are_one_line(db: DB, tmp_path: Path) -> None:
    base = ["--database-url", db.url, "--table-name", db.table]
    for args in (["schedule", "X", "--cron", "0 0 -2 * *", *base],
                 ["schedule", "X", "--every", "3x", *base],
                 ["schedule", "X", "--every", "1h", *base],  # no reoccur_in column
                 ["schedules", *base],
                 ["schedules", "--database-url", db.url, "--table-name", "nope"],
                 ["schedules", "--database-url", "mysql+pymysql://nobody@127.0.0.1:1/x"]):
        out = cli(*args)
        assert out.returncode != 0, args
        assert "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_detected_columns_are_reported_by_check(db: DB) -> None:
    base = ["check", "--database-url", db.url, "--table-name", db.table]
    assert "ok    recurring rows: none" in cli(*base).stdout
    add_recurring_columns(db.engine, db.table)
    assert ("recurring rows: cron (delayed_cron_job), reoccur_in/last_run_at (delayed_job fork)"
            in cli(*base).stdout)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} DROP COLUMN last_run_at"))
    assert "WARN  reoccur_in and last_run_at come together" in cli(*base).stdout


def test_schema_recurring_prints_and_adds_the_columns(db: DB) -> None:
    base = ["schema", "--recurring", "--database-url", db.url, "--table-name", db.table]
    out = cli(*base)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ALTER TABLE") == 3 and "ADD COLUMN cron VARCHAR(255);" in out.stdout
    out = cli(*base, "--create")
    assert out.stdout.strip() == f"table {db.table}: added cron, reoccur_in, last_run_at"
    assert cli(*base, "--create").stdout.strip() == f"table {db.table} has the recurring columns"
    assert cli(*base).stdout == ""
    assert "recurring rows: cron (delayed_cron_job), reoccur_in/last_run_at" in cli(
        "check", "--database-url", db.url, "--table-name", db.table).stdout
