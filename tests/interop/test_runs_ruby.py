"""Run records and batches with real Rails: the migration we print, the README's model, a
Rails-side cancel request, and a batch whose parts Ruby and Python finish (either last)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import ruby_yaml, runs
from dj_consumer.clock import SystemClock
from dj_consumer.runs import schema
from dj_consumer.runs.batches import finish_batch_part
from dj_consumer.runs.records import PartSummary, result_json
from dj_consumer.runs.store import RunsStore, detect
from tests.integration.runs_helpers import job
from tests.interop.conftest import Interop
from tests.interop.helpers import ruby_url

pytestmark = pytest.mark.ruby

SCRIPT = Path(__file__).resolve().parent / "ruby" / "runs.rb"


class Rails:
    def __init__(self, interop: Interop) -> None:
        self.interop = interop
        self.runs, self.batches = f"{interop.table}_jr", f"{interop.table}_jb"

    def __call__(self, command: str, *extra: str, stdin: str = "") -> Any:
        i = self.interop
        proc = subprocess.run(
            ["ruby", str(SCRIPT), command, "--url", ruby_url(i.url), "--table", i.table,
             "--runs", self.runs, "--batches", self.batches, *extra],
            input=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    def config(self) -> dict[str, Any]:
        return self.interop.db.config(runs_table=self.runs, batches_table=self.batches)

    def store(self) -> RunsStore:
        found = detect(self.interop.db.engine, runs_table=self.runs,
                       table_name=self.interop.table, batches_table=self.batches)
        assert found is not None and found.has_batches
        return found


@pytest.fixture
def rails(interop: Interop) -> Iterator[Rails]:
    r = Rails(interop)
    r("migrate", stdin=schema.rails_migration(r.runs, r.batches))
    try:
        yield r
    finally:
        for table in reversed(schema.tables(r.runs, r.batches)):
            table.drop(interop.db.engine, checkfirst=True)


def test_the_rails_migration_makes_the_tables_the_store_uses(rails: Rails) -> None:
    store = rails.store()
    now = SystemClock().now()
    engine = rails.interop.db.engine
    with engine.begin() as conn:
        store.start(conn, job(41, {"run_key": "report-41"}), now)
        store.progress(conn, 41, 9, 10, "render", now=now)
    with engine.begin() as conn:
        store.finish(conn, 41, "succeeded", attempts=0, now=now,
                     result=result_json({"url": "https://example.test/r.pdf", "pages": 3}))
    read = rails("read", "--id", "41")
    assert (read["state"], read["finished"], read["run_key"], read["progress_current"]) == \
        ("succeeded", True, "report-41", 9)
    assert read["result_data"] == {"url": "https://example.test/r.pdf", "pages": 3}
    insp = sa.inspect(engine)
    assert insp.get_pk_constraint(rails.runs)["constrained_columns"] == ["job_id"]
    assert insp.get_pk_constraint(f"{rails.batches}_parts")["constrained_columns"] == \
        ["batch_id", "batch_index"]


def test_rails_writes_cancel_requested_at_and_the_heartbeat_read_sees_it(rails: Rails) -> None:
    store = rails.store()
    engine = rails.interop.db.engine
    with engine.begin() as conn:
        store.start(conn, job(51), SystemClock().now())
        store.start(conn, job(52), SystemClock().now())
    assert rails("cancel", "--id", "52") == 1
    with engine.connect() as conn:
        assert store.cancel_requested(conn, [51, 52]) == {52}


def test_the_migration_rolls_back(interop: Interop) -> None:
    r = Rails(interop)
    migration = schema.rails_migration(r.runs, r.batches)
    assert r.runs in r("migrate", stdin=migration)["tables"]
    after = r("rollback", stdin=migration)["tables"]
    assert not {r.runs, r.batches, f"{r.batches}_parts"} & set(after)


@pytest.mark.parametrize("last", ["python", "ruby"])
def test_ruby_and_python_each_finish_a_part_and_on_complete_comes_once(
        rails: Rails, last: str) -> None:
    made = runs.enqueue_batch("ImportJob", ["a", "bad-1", "c", "d"], batch_size=2,
                              on_complete="BatchDone", queue="imports", config=rails.config())
    first_part, second_part = made.job_ids
    loaded = rails("load", "--id", str(first_part))
    assert loaded == {"class": "ImportJob", "ivars": {
        "batch_id": made.batch_id, "batch_index": 0, "items": ["a", "bad-1"]}}
    store = rails.store()
    engine = rails.interop.db.engine

    def python_finishes() -> Any:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {rails.interop.table} WHERE id = :id"),
                         {"id": second_part})
            return finish_batch_part(conn, store, made.batch_id, 1, PartSummary(processed=2),
                                     now=SystemClock().now(), job_id=second_part)

    if last == "ruby":
        assert not python_finishes().completed
    assert rails("work-one", "--id", str(first_part)) == {"ok": True, "left": False}
    if last == "python":
        assert python_finishes().completed
    assert rails("finish", "--batch-id", made.batch_id, "--id", "0") == \
        {"counted": False, "completed": False, "on_complete_job_id": None}
    done = [r for r in rails.interop.db.rows() if "BatchDone" in r.handler]
    assert len(done) == 1 and done[0].queue == "imports"
    expected = {"batch_id": made.batch_id, "name": "ImportJob", "total": 4, "batches": 2,
                "processed": 3, "skipped": 0, "errored": 1,
                "errors": [{"id": "bad-1", "message": "cannot import bad-1"}]}
    assert ruby_yaml.load(done[0].handler).payload == expected
    assert rails("load", "--id", str(done[0].id)) == {"class": "BatchDone", "ivars": expected}
    batch = runs.batch(made.batch_id, config=rails.config())
    assert batch is not None and batch.complete and batch.on_complete_job_id == done[0].id


def test_rails_enqueues_http_steps_and_a_python_worker_runs_them(interop: Interop) -> None:
    from dj_consumer import Registry, make_worker
    from dj_consumer.contrib import http_steps
    from tests.http_server import http_server

    rails = Rails(interop)
    with http_server() as server:
        server.plan = {"/orders": [201], "/charge": [502]}
        specs = [
            {"steps": [
                {"name": "order", "method": "POST", "url": f"{server.url}/orders",
                 "body": {"sku": "A-1", "qty": 2}, "expect": 201,
                 "headers": {"Authorization": "Bearer tok-abcdefgh123"}},
                {"name": "confirm", "method": "GET", "url": f"{server.url}/confirm"}]},
            {"steps": [{"name": "charge", "method": "POST", "url": f"{server.url}/charge",
                        "headers": {"Authorization": "Bearer tok-abcdefgh123"},
                        "retry_exponent": 2}], "max_attempts": 3},
        ]
        ok, failing = rails("enqueue-http", stdin=json.dumps(specs))
        registry = Registry()
        http_steps.register(registry, "HttpSteps")
        worker = make_worker(interop.db.config(exit_on_complete=True, queues=["http"]),
                             registry=registry)
        before = SystemClock().now().replace(microsecond=0)
        assert worker.work_off(10) == (1, 1)
    assert interop.db.row(ok) is None
    assert [(s.method, s.path) for s in server.seen[:2]] == [("POST", "/orders"),
                                                            ("GET", "/confirm")]
    assert json.loads(server.seen[0].body) == {"sku": "A-1", "qty": 2}
    row = interop.db.row(failing)
    assert row.attempts == 1 and row.failed_at is None
    assert before + timedelta(seconds=1) <= row.run_at <= before + timedelta(seconds=3)  # 1 ** 2
    assert row.last_error.startswith("dj_consumer.contrib.http_steps.StepFailed: "
                                     f"step charge: POST {server.url}/charge returned 502")
    assert "tok-abcdefgh123" not in row.last_error


def test_rails_enqueues_active_job_and_struct_jobs_and_reads_their_records(rails: Rails) -> None:
    """Ruby enqueues, a Python worker runs, Ruby reads the run records through ActiveRecord."""
    from dj_consumer import Job, Registry, make_worker

    ids = rails("enqueue-reports")
    registry = Registry()

    @registry.run("RunsReportJob")
    def active(j: Job) -> Any:
        year = j.payload["arguments"][0]
        j.report_progress(1, 1, "render")
        return {"year": year, "kind": "active_job"}

    @registry.run("ReportStruct")
    def struct(j: Job) -> Any:
        return {"year": j.payload["year"], "kind": "struct"}

    worker = make_worker({**rails.config(), "queues": ["py"]}, registry)
    try:
        assert worker.work_off(5) == (2, 0)
    finally:
        worker.close()
    active_run = rails("read", "--id", str(ids["active_job"]))
    assert (active_run["state"], active_run["finished"], active_run["name"],
            active_run["run_key"], active_run["owner_id"], active_run["progress_stage"]) == \
        ("succeeded", True, "RunsReportJob", "aj-2026", "7", "render")
    assert active_run["result_data"] == {"year": 2026, "kind": "active_job"}
    struct_run = rails("read", "--id", str(ids["struct"]))
    assert (struct_run["state"], struct_run["run_key"], struct_run["owner_id"],
            struct_run["attempts"]) == ("succeeded", "struct-2027", "8", 0)
    assert struct_run["result_data"] == {"year": 2027, "kind": "struct"}
    assert rails.interop.db.count() == 0


def test_rails_cancels_a_job_a_python_worker_is_running(rails: Rails) -> None:
    """The README's Rails-side cancel (update_all cancel_requested_at) reaches the handler as
    j.cancelled within a heartbeat; Rails then reads the record as cancelled."""
    import threading
    import time

    from dj_consumer import Job, Registry, make_worker

    ids = rails("enqueue-reports")
    started = threading.Event()
    registry = Registry()

    @registry.run("RunsReportJob")
    def long(j: Job) -> None:
        started.set()
        deadline = time.monotonic() + 30
        while not j.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)

    worker = make_worker({**rails.config(), "queues": ["py"], "heartbeat_interval": 0.3,
                          "run_progress_interval": 0.1}, registry)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(worker.work_off(1)))
    thread.start()
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 10
        while runs.get(ids["active_job"], config=rails.config()) is None:
            assert time.monotonic() < deadline, "no running record"
            time.sleep(0.05)
        t0 = time.monotonic()
        assert rails("cancel", "--id", str(ids["active_job"])) == 1
        thread.join(30)
        assert time.monotonic() - t0 < 15
    finally:
        thread.join(30)
        worker.close()
    assert result == [(0, 1)]
    read = rails("read", "--id", str(ids["active_job"]))
    assert (read["state"], read["finished"], read["attempts"], read["error_message"]) == \
        ("cancelled", True, 0, "cancelled")
    assert rails.interop.db.row(ids["active_job"]) is None
