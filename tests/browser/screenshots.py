"""The README's screenshots, from a real run: `make screenshots` (python -m
tests.browser.screenshots [overview job run recurring]) writes docs/web-overview.png,
docs/web-job.png, docs/web-run.png and docs/web-recurring.png (or the ones named).

A MariaDB table made by Rails' migration, with a runs table and the recurring columns, gets
Ruby enqueues (struct, ActiveJob, `.delay`) and ours, and two schedules; a Ruby worker fails
a job for good; a Ruby worker and a Python worker each hold a long job (the Python one
reports its progress); a job nobody handles waits. `dj-consumer web` serves it and headless Chromium
(tests/browser/conftest.py) takes the pictures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import dj_consumer
from dj_consumer import enqueue
from dj_consumer.clock import SystemClock
from dj_consumer.runs import schema as runs_schema
from dj_consumer.schema import add_recurring_columns
from tests.conftest import ROOT, clean_env
from tests.interop.conftest import make_interop
from tests.interop.helpers import stop_all
from tests.webserver import wait_for, web_server

JOBS = Path(__file__).with_name("screenshot_jobs.py")
DOCS = ROOT / "docs"
SHOTS = ("overview", "job", "run", "recurring")
RUNS = ("delayed_job_runs_shots", "delayed_job_batches_shots")
#: Where the pictures say the app lives, instead of this checkout's path.
NEUTRAL_ROOT = "/srv/app"


def fill(shared: Any, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """The table's rows and the workers holding locks; returns the workers to stop."""
    shared.ruby.enqueue([
        {"kind": "struct", "class": "RubyOnlyJob", "args": {"key": "r-%{i}"}, "count": 40,
         "queue": "default"},
        {"kind": "active_job", "class": "RubyActiveJob", "args": ["aj-%{i}"], "count": 12},
        {"kind": "delay_class", "class": "RubyMailer", "method": "deliver", "args": ["m-%{i}"],
         "count": 5, "queue": "mail"},
        {"kind": "struct", "class": "OneShotJob", "args": {"key": "invoice-7", "message":
         "Net::ReadTimeout: the billing API did not answer"}, "queue": "billing"},
    ])
    shared.ruby.work(queues=["billing"])  # fails OneShotJob for good, as Ruby writes it
    neutral_paths(shared)
    shared.ruby.enqueue([{"kind": "struct", "class": "SharedJob",
                          "args": {"key": "slow", "seconds": 600}, "queue": "slow"}])
    cfg = {"database_url": shared.url, "table_name": shared.table}
    add_recurring_columns(shared.db.engine, shared.table)
    runs_schema.create(shared.db.engine, *RUNS)
    dj_consumer.schedule(cfg, "NightlyReport", {"to": "ops"}, cron="0 6 * * * Europe/Berlin",
                         queue="reports")
    dj_consumer.schedule(cfg, "SyncInventory", every=timedelta(minutes=15), queue="inventory")
    now = SystemClock().now()
    for i in range(25):
        enqueue(cfg, "ReportJob", {"account_id": 100 + i}, queue="reports")
    for i in range(8):
        enqueue(cfg, "ReportJob", {"account_id": 200 + i}, queue="reports",
                run_at=now + timedelta(hours=1))
    for i in range(3):
        enqueue(cfg, "LegacyExportJob", {"batch": i}, queue="exports",
                run_at=now - timedelta(minutes=40))
    ruby = shared.ruby.spawn_worker(tmp / "ruby.log", queues=["slow"], exit_on_complete=False)
    python = subprocess.Popen(
        [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", shared.url,
         "--table-name", shared.table, "--queues", "reports", "--import", str(JOBS),
         "--worker-id", "py", "--runs-table", RUNS[0], "--batches-table", RUNS[1]],
        env=clean_env(), cwd=ROOT,
        stdout=(tmp / "py.log").open("wb"), stderr=subprocess.STDOUT)
    return [ruby, python]


def neutral_paths(shared: Any) -> None:
    """Ruby's backtrace in last_error names the file of the job, here in this checkout
    (<checkout>/tests/interop/ruby/jobs.rb): shown as if the checkout were deployed at /srv/app."""
    with shared.db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {shared.table} SET last_error = "
                             "REPLACE(last_error, :root, :neutral) WHERE last_error IS NOT NULL"),
                     {"root": str(ROOT), "neutral": NEUTRAL_ROOT})


def main(argv: list[str]) -> int:
    from tests.browser.conftest import FLAGS, chromium_missing

    wanted = argv or list(SHOTS)
    unknown = sorted(set(wanted) - set(SHOTS))
    if unknown:
        print(f"unknown screenshot {', '.join(unknown)}; choose from {', '.join(SHOTS)}",
              file=sys.stderr)
        return 2
    reason = chromium_missing()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    tmp = Path(tempfile.mkdtemp(prefix="dj_shots_"))
    with ExitStack() as stack:
        shared = next(iter(stack.enter_context(_generator(make_interop("mariadb", tmp)))))
        workers = fill(shared, tmp)
        stack.callback(stop_all, workers)
        stack.callback(_drop_runs, shared)
        server = stack.enter_context(web_server(shared.url, shared.table, tmp, "--runs-table",
                                                RUNS[0], "--batches-table", RUNS[1],
                                                imports=[JOBS]))
        options = webdriver.ChromeOptions()
        for flag in (*FLAGS, f"--user-data-dir={tmp / 'profile'}"):
            options.add_argument(flag.replace("1300,1000", "1280,1180"))
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        stack.callback(driver.quit)
        driver.get(server.url + "/")
        from tests.browser.test_dashboard import text_of

        wait_for(lambda: "py host:" in text_of(driver, "workers")
                 and "ruby" in text_of(driver, "workers"),
                 "both workers' locks on the overview", timeout=120)
        time.sleep(1)
        save(driver, "overview", tmp, wanted)
        driver.get(server.url + "/failed")
        driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr[data-id] a").click()
        save(driver, "job", tmp, wanted)
        driver.get(server.url + "/jobs?state=running&name=ReportJob")
        driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr[data-id] a").click()
        wait_for(lambda: driver.execute_script(
            "const p = document.getElementById('progress'); return p && p.value >= 25"),
            "the running job's progress bar a good way along", timeout=60)
        save(driver, "run", tmp, wanted)
        driver.get(server.url + "/recurring")
        wait_for(lambda: driver.find_elements(By.ID, "schedules"), "the schedules", timeout=60)
        save(driver, "recurring", tmp, wanted)
    print("wrote " + ", ".join(str(DOCS / f"web-{n}.png") for n in wanted))
    return 0


def save(driver: Any, shot: str, tmp: Path, wanted: list[str]) -> None:
    """docs/web-<shot>.png if asked for, unless the page shows a path of this machine (the
    checkout, the run's temporary directory, the home directory): a README picture names none."""
    if shot not in wanted:
        return
    page = driver.page_source
    shown = [str(p) for p in (ROOT, tmp, Path.home()) if str(p) in page]
    if shown:
        raise SystemExit(f"web-{shot}.png not written: the page shows {', '.join(shown)}")
    driver.save_screenshot(str(DOCS / f"web-{shot}.png"))


def _drop_runs(shared: Any) -> None:
    for table in reversed(runs_schema.tables(*RUNS)):
        table.drop(shared.db.engine, checkfirst=True)


class _generator:
    """A fixture generator (make_interop) as a context manager: its teardown runs on exit."""

    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def __enter__(self) -> list[Any]:
        return [next(self.gen)]

    def __exit__(self, *exc: object) -> None:
        for _ in self.gen:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
