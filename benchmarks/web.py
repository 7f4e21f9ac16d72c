"""`make bench` scenario `web`: every dashboard page on 1,000,000 rows (the status scenario's
fill, plus the recurring columns with a cron on 1 row in 10,000 and a runs table with a
running job's record), fetched over HTTP from a `dj-consumer web` process, as a browser would."""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa

from benchmarks.env import Table, scratch_dir, utcnow
from benchmarks.operator import ROOT, STATUS_ROWS, _clean_env, _fill, _program
from benchmarks.report import Section
from dj_consumer.runs import schema as runs_schema
from dj_consumer.schema import add_recurring_columns

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

RUNS = 7
LIMIT_MS = 300.0


def _pages(failed_id: int, row_id: int, cron_id: int) -> list[tuple[str, str]]:
    """(label, path): every page and fragment, with the filters that read the most."""
    return [
        ("overview", "/"), ("overview fragment (polled)", "/fragments/overview"),
        ("totals fragment (polled)", "/fragments/totals"),
        ("jobs", "/jobs"), ("jobs: ready", "/jobs?state=ready"),
        ("jobs: scheduled", "/jobs?state=scheduled"), ("jobs: running (0.1%)", "/jobs?state=running"),
        ("failed (1%)", "/failed"), ("jobs: queue", "/jobs?queue=mail"),
        ("jobs: name (parsed)", "/jobs?name=User%23send_welcome"),
        ("jobs: text", "/jobs?q=monthly"),
        ("jobs: queue matching nothing", "/jobs?queue=nosuch"),
        ("jobs: text matching nothing", "/jobs?q=nosuch"),
        ("failed: name matching nothing", "/failed?name=NoSuchJob"),
        ("job page (failed)", f"/jobs/{failed_id}"),
        ("job page (ActiveJob, running, run record)", f"/jobs/{row_id}"),
        ("run record fragment (polled)", f"/jobs/{row_id}/run"),
        ("job page (cron row)", f"/jobs/{cron_id}"),
        ("recurring (list from the pass)", "/recurring"),
        ("recurring fragment (polled)", "/fragments/recurring"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(url: str, table: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    log = (scratch_dir() / f"web-{port}.log").open("wb")
    proc = subprocess.Popen([*_program(), "web", "--database-url", url, "--table-name", table,
                             "--runs-table", _runs(table), "--batches-table", _batches(table),
                             "--port", str(port), "--import", "benchmarks.jobs"],
                            cwd=ROOT, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _first_pass(client: httpx.Client, proc: subprocess.Popen[bytes]) -> float:
    """Wait for the server, then for a status pass that read the schedules too (the recurring
    page asks for them); that pass's duration in seconds."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dj-consumer web exited {proc.returncode}")
        try:
            schedules = 'id="schedules"' in client.get("/fragments/recurring").text
            text = client.get("/fragments/overview").text
        except httpx.TransportError:
            schedules, text = False, ""
        found = re.search(r"in ([\d.]+) s, one pass", text)
        if found and schedules:
            return float(found.group(1))
        time.sleep(0.5)
    raise RuntimeError("no status pass with the schedules within 300 s")


def _timed(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    r = client.get(path)
    took = (time.perf_counter() - started) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    return took


def _runs(table: str) -> str:
    return f"{table}_runs"


def _batches(table: str) -> str:
    return f"{table}_batches"


def _extras(table: Table) -> tuple[int, int, int]:
    """A failed row, an ActiveJob row from the middle of the table, made running with a run
    record in progress, and a cron row: the recurring columns are added, and a cron set on 1
    row in 10,000."""
    add_recurring_columns(table.engine, table.name)
    runs_schema.create(table.engine, _runs(table.name), _batches(table.name))
    with table.engine.begin() as conn:
        middle = conn.execute(sa.text(f"SELECT MAX(id) / 2 FROM {table.name}")).scalar_one()
        failed = conn.execute(sa.text(
            f"SELECT MIN(id) FROM {table.name} WHERE failed_at IS NOT NULL AND id > :m"),
            {"m": middle}).scalar_one()
        active_job = conn.execute(sa.text(
            f"SELECT MIN(id) FROM {table.name} WHERE handler LIKE :aj AND id > :m"),
            {"m": middle, "aj": "%ActiveJob::QueueAdapters%"}).scalar_one()
        conn.execute(sa.text(f"UPDATE {table.name} SET cron = '*/5 * * * *' WHERE id % 10000 = 7"))
        cron = conn.execute(sa.text(f"SELECT MIN(id) FROM {table.name} WHERE id % 10000 = 7 "
                                    "AND id > :m"), {"m": middle}).scalar_one()
        now = utcnow().replace(microsecond=0)
        conn.execute(sa.text(f"UPDATE {table.name} SET locked_by = 'py host:w pid:9', "
                             "locked_at = :now WHERE id = :id"), {"now": now, "id": active_job})
        conn.execute(sa.insert(runs_schema.runs_table(_runs(table.name))).values(
            job_id=active_job, name="MailJob", queue="mail", state="running", attempts=0,
            progress_current=40, progress_total=100, progress_stage="rows",
            locked_by="py host:w pid:9", started_at=now, created_at=now, updated_at=now))
    return int(failed), int(active_job), int(cron)


def _drop_runs(table: Table) -> None:
    for t in reversed(runs_schema.tables(_runs(table.name), _batches(table.name))):
        t.drop(table.engine, checkfirst=True)


def web(ctx: Context) -> None:
    s = Section(f"web: `dj-consumer web` pages on {STATUS_ROWS:,} rows (ms over HTTP, "
                f"{RUNS} rounds of fetches, 1 s apart)", ["database", "page", "median", "max"])
    for t in ctx.on("mariadb", "postgresql"):
        ctx.log(f"web {t.backend}: filling {STATUS_ROWS:,} rows")
        with Table(t, "web") as table:
            _fill(table, STATUS_ROWS)
            ids = _extras(table)
            table.analyze()
            proc, base = _serve(t.url, table.name)
            try:
                with httpx.Client(base_url=base, timeout=60) as client:
                    took = _first_pass(client, proc)
                    ctx.log(f"web {t.backend}: timing pages")
                    pages = _pages(*ids)
                    samples: dict[str, list[float]] = {label: [] for label, _ in pages}
                    for _ in range(RUNS):  # rounds 1 s apart: some fetches meet a pass
                        for label, path in pages:
                            samples[label].append(_timed(client, path))
                        time.sleep(1)
                    worst = max(max(v) for v in samples.values())
                    for label, values in samples.items():
                        s.add(t.backend, label, f"{statistics.median(values):.0f}",
                              f"{max(values):.0f}")
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                _drop_runs(table)
        s.add(t.backend, "(status pass + schedules in the background, s)", f"{took:.2f}", "")
        if t.backend == "mariadb":
            ctx.report.target(f"web {t.backend}: every page < {LIMIT_MS:.0f} ms on "
                              f"{STATUS_ROWS:,} rows", f"{worst:.0f} ms", worst < LIMIT_MS)
    s.note("pages read bounded windows of the primary key (admin_scan) and the latest status "
           "pass, which a thread takes every 5 s (or 4x its duration) while pages are asked "
           "for (some fetches overlap a pass); 'matching nothing' is the "
           "worst case of a listing: it reads windows until its 120 ms budget is spent; the "
           "recurring page shows the list the pass read (no index covers cron), and a job's "
           "run record and schedule are one primary-key read each")
    ctx.report.sections.append(s)
