"""A running job's progress bar, watched in a real Chromium: a real worker runs a job on a
MariaDB table with a runs table, the job reports progress one step at a time (each step let
go by the test), and the open job page shows each step without a reload, then the final
record with the result once the job succeeds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, runs_tables
from tests.integration.test_protocol import obj
from tests.webserver import WebServer, runs_web_server, wait_for

pytestmark = pytest.mark.browser

STEPS = 4


@pytest.fixture
def rdb(mariadb_db: DB) -> Iterator[RunsDB]:
    with runs_tables(mariadb_db) as r:
        yield r


@pytest.fixture
def server(rdb: RunsDB, tmp_path: Path) -> Iterator[WebServer]:
    with runs_web_server(rdb, tmp_path) as s:
        yield s


def shown(browser: Any) -> dict[str, Any]:
    """The run record as the page shows it now (one script: htmx may swap it between calls)."""
    found: dict[str, Any] = browser.execute_script("""
        const bar = document.getElementById('progress');
        const text = id => { const e = document.getElementById(id); return e ? e.innerText : null; };
        return {state: text('run-state'), value: bar ? bar.value : null, max: bar ? bar.max : null,
                text: text('progress-text'), stage: text('progress-stage'),
                result: text('run-result'), marker: window.djMarker || null};""")
    return found


def test_the_progress_bar_advances_while_the_job_runs(browser: Any, rdb: RunsDB,
                                                      server: WebServer) -> None:
    gates = [threading.Event() for _ in range(STEPS)]
    reg = Registry()

    @reg.run("ImportJob")
    def run(j: Job) -> dict[str, int]:
        for step, gate in enumerate(gates, 1):
            assert gate.wait(60), f"step {step} was never let go"
            j.report_progress(step, STEPS, stage=f"file {step}")
        return {"files": STEPS}

    job_id = rdb.db.insert(obj("ImportJob", files=STEPS), queue="imports")
    browser.get(f"{server.url}/jobs/{job_id}")
    assert shown(browser)["state"] is None  # not started: no record yet
    browser.execute_script("window.djMarker = 'same page'")  # a reload would drop it

    worker = make_worker(rdb.config(run_progress_interval=0.1), reg)
    thread = threading.Thread(target=worker.start, name="progress-worker")
    thread.start()
    try:
        wait_for(lambda: shown(browser)["state"] == "running", "the record to say running")
        seen = []
        for step, gate in enumerate(gates, 1):
            gate.set()
            wait_for(lambda step=step: shown(browser)["value"] == step,
                     f"the progress bar at {step} of {STEPS}", timeout=30)
            now = shown(browser)
            seen.append((now["value"], now["max"], now["stage"]))
            if step < STEPS:
                assert now["state"] == "running"
                assert now["text"] == f"{step} / {STEPS} ({100 * step // STEPS}%)"
        assert seen[:-1] == [(s, STEPS, f"file {s}") for s in range(1, STEPS)]
        wait_for(lambda: shown(browser)["state"] == "succeeded", "the final record")
    finally:
        for gate in gates:
            gate.set()
        worker.stop()
        thread.join(30)
        worker.close()
    final = shown(browser)
    assert final["marker"] == "same page"  # every step arrived without a reload
    assert (final["value"], final["max"]) == (STEPS, STEPS)
    assert '"files": 4' in final["result"]
    assert rdb.db.row(job_id) is None  # succeeded: the row is gone, its record stays
    polling = browser.execute_script(
        "return document.getElementById('run').getAttribute('hx-trigger')")
    assert polling is None  # a final record is not asked for again
