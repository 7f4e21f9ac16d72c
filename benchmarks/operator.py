"""Scenarios for the command line: start-up time, and `dj-consumer status` on 1,000,000 rows."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.env import NOOP_HANDLER, RUBY_ONLY_HANDLER, Table, scratch_dir
from benchmarks.report import Section

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

ROOT = Path(__file__).resolve().parent.parent
STATUS_ROWS = 1_000_000


def _program() -> list[str]:
    """The installed entry point next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("dj-consumer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dj_consumer.cli"]


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one run of the whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}


# -- start-up --------------------------------------------------------------------------------


def startup(ctx: Context) -> None:
    handler = scratch_dir() / "handler.yml"
    handler.write_text(NOOP_HANDLER)
    runs = 5 if ctx.quick else 11
    s = Section(f"startup: the dj-consumer process from start to exit (median of {runs} runs)",
                ["command", "wall s (median)", "wall s (min)", "CPU s (median)"])
    env = _clean_env()
    for label, args in [("--help", ["--help"]), ("parse FILE", ["parse", str(handler)]),
                        ("work --help", ["work", "--help"])]:
        ctx.log(f"startup {label}")
        _timed([*_program(), *args], env)  # warm the file cache
        samples = [_timed([*_program(), *args], env) for _ in range(runs)]
        wall = statistics.median(w for w, _, _ in samples)
        s.add(f"dj-consumer {label}", f"{wall:.3f}", f"{min(w for w, _, _ in samples):.3f}",
              f"{statistics.median(c for _, c, _ in samples):.3f}")
        if label != "work --help":
            ctx.report.target(f"startup: dj-consumer {label} < 0.3 s", f"{wall:.3f} s", wall < 0.3)
    s.note("the interpreter's own start-up is included; SQLAlchemy, structlog and the worker "
           "are imported only by the commands that use them")
    ctx.report.sections.append(s)


# -- status on a large table -------------------------------------------------------------------


def _fill(table: Table, rows: int) -> None:
    """`rows` rows in one server-side statement: 70% a Ruby-only struct, 10% each ActiveJob,
    .delay and one of ours; 1/3 scheduled, 1% failed, 0.1% locked by one of four workers."""
    mariadb = table.target.backend == "mariadb"
    source = f"seq_1_to_{rows}" if mariadb else f"generate_series(1, {rows}) AS s(seq)"
    text = "CHAR" if mariadb else "TEXT"

    def cat(*parts: str) -> str:
        return f"CONCAT({', '.join(parts)})" if mariadb else "(" + " || ".join(parts) + ")"

    now = "UTC_TIMESTAMP()" if mariadb else "(now() AT TIME ZONE 'utc')"
    secs = (lambda e: f"INTERVAL ({e}) SECOND") if mariadb else (lambda e: f"({e}) * INTERVAL '1 second'")
    aj = cat("'--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper\n"
             "job_data:\n  job_class: MailJob\n  job_id: '", f"CAST(seq AS {text})",
             "'\n  queue_name: mail\n  priority:\n  arguments:\n  - 1\n'")
    holder = cat("'py host:w pid:'", f"CAST(seq % 4 AS {text})")
    pm = ("'--- !ruby/object:Delayed::PerformableMethod\nobject: !ruby/object:User\n"
          "  raw_attributes:\n    id: 12\nmethod_name: :send_welcome\nargs:\n- en\n'")
    sql = (
        f"INSERT INTO {table.name} (priority, attempts, handler, run_at, queue, failed_at, "
        "locked_at, locked_by, created_at, updated_at) "
        f"SELECT seq % 3, 0, CASE seq % 10 WHEN 0 THEN {aj} WHEN 1 THEN {pm} "
        f"WHEN 2 THEN '{NOOP_HANDLER}' ELSE '{RUBY_ONLY_HANDLER}' END, "
        f"CASE WHEN seq % 3 = 0 THEN {now} + {secs('seq % 3600')} "
        f"ELSE {now} - {secs('seq % 86400')} END, "
        "CASE seq % 7 WHEN 0 THEN 'mail' WHEN 1 THEN NULL WHEN 2 THEN 'python' "
        "ELSE 'default' END, "
        f"CASE WHEN seq % 97 = 0 THEN {now} END, CASE WHEN seq % 1000 = 5 THEN {now} END, "
        f"CASE WHEN seq % 1000 = 5 THEN {holder} END, "
        f"{now}, {now} FROM {source}"
    )
    table.execute(sql.replace(":", "\\:"))


def status(ctx: Context) -> None:
    runs = 3
    s = Section(f"status: `dj-consumer status --json` on {STATUS_ROWS:,} rows (best of {runs})",
                ["database", "process s", "query s (in status)", "CPU s", "names", "fill s"])
    for t in ctx.on("mariadb", "postgresql"):
        ctx.log(f"status {t.backend}: filling {STATUS_ROWS:,} rows")
        with Table(t, "status") as table:
            started = time.perf_counter()
            _fill(table, STATUS_ROWS)
            table.analyze()
            filled = time.perf_counter() - started
            argv = [*_program(), "status", "--json", "--database-url", t.url,
                    "--table-name", table.name]
            ctx.log(f"status {t.backend}: timing")
            samples = [_timed(argv, _clean_env()) for _ in range(runs)]
        best = min(samples, key=lambda x: x[0])
        report = json.loads(best[2])
        s.add(t.backend, f"{best[0]:.2f}", f"{report['seconds']:.2f}", f"{best[1]:.2f}",
              len(report["names"]), f"{filled:.0f}")
        ctx.report.target(f"status {t.backend}: {STATUS_ROWS:,} rows < 2 s", f"{best[0]:.2f} s",
                          best[0] < 2)
    s.note("process s: the whole `dj-consumer status` run; query s: the grouped pass plus the "
           "lookups that name each group; 70% Ruby-only structs, 10% each ActiveJob, .delay and "
           "Python rows, 4 queues, 1/3 scheduled, 1% failed, 0.1% locked")
    ctx.report.sections.append(s)
