"""rubydj-pyworker 1.2.1, the one Python delayed_job worker on PyPI, beside us and Ruby.

It runs only `.delay` calls (Delayed::PerformableMethod) on an ActiveRecord receiver, in queue
`default`, on PostgreSQL, from a table it calls `delayed_jobs`. So the noop scenario gets a
second table on PostgreSQL: the same rows, written the way delayed_job 4.1.9 on Rails 6.1
writes `user.delay.noop`, drained by dj, by a real Ruby worker (which loads the User row for
every job, as it must) and by pyworker. Its code is installed at bench time into a venv of its
own (.bench/venv-pyworker), never committed; when that fails, its row says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from benchmarks import procs
from benchmarks.env import Table, Target, unique_table
from benchmarks.pickup import Variant
from benchmarks.procs import BenchError, Timing
from benchmarks.report import Section, rate, ratio

PACKAGE = "rubydj-pyworker==1.2.1"
VENV = procs.ROOT / ".bench" / "venv-pyworker"
DRIVER = procs.HERE / "pyworker_driver.py"
RECEIVER = "User"  # the ActiveRecord class the rows call `noop` on
QUEUE = "default"  # the only queue pyworker reads


def delay_handler(receiver: str, record_id: int, name: str, method: str) -> str:
    """`record.delay.method` as delayed_job 4.1.9 + ActiveRecord 6.1 store it (Psych's
    encode_with of the record: its attributes as read from the database, new_record false)."""
    return (
        "--- !ruby/object:Delayed::PerformableMethod\n"
        f"object: !ruby/object:{receiver}\n"
        "  concise_attributes:\n"
        "  - !ruby/object:ActiveModel::Attribute::FromDatabase\n"
        "    name: id\n"
        f"    value_before_type_cast: {record_id}\n"
        "  - !ruby/object:ActiveModel::Attribute::FromDatabase\n"
        "    name: name\n"
        f"    value_before_type_cast: {name}\n"
        "  new_record: false\n"
        "  active_record_yaml_version: 2\n"
        f"method_name: :{method}\n"
        "args: []\n"
    )


DELAY_HANDLER = delay_handler(RECEIVER, 1, "bench", "noop")


def search_path_env(schema: str) -> dict[str, str]:
    """libpq's PGOPTIONS for a process that should find `delayed_jobs` in `schema` first."""
    return {**os.environ, "PGOPTIONS": f"-c search_path={schema}"}


def view_sql(schema: str, table: str) -> list[str]:
    """A schema holding `delayed_jobs` as a plain view of the table under test: PostgreSQL
    updates, deletes and locks through it, so pyworker drains the very rows the others do."""
    return [f"CREATE SCHEMA {schema}",
            f"CREATE VIEW {schema}.delayed_jobs AS SELECT * FROM {table}"]


def result_of(stdout: str, expected: int) -> Timing:
    """The driver's JSON line as a Timing; a run that did not finish every job raises with
    pyworker's own first error, so the row can say why."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise BenchError("pyworker driver printed nothing")
    result: dict[str, Any] = json.loads(lines[-1])
    if int(result["jobs"]) < expected:
        why = result.get("error") or "no error logged"
        raise BenchError(f"pyworker ran {result['jobs']} of {expected} jobs "
                         f"({result.get('failed', 0)} failed): {why}")
    return Timing.of(result)


def venv_python(log: Callable[[str], None] = print) -> tuple[str | None, str | None]:
    """(the venv's python, None), creating the venv on first use; or (None, why not)."""
    python = VENV / "bin" / "python"
    marker = VENV / f".installed-{PACKAGE}"
    if marker.exists():
        return str(python), None
    log(f"installing {PACKAGE} into {VENV.relative_to(procs.ROOT)}")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True,
                       capture_output=True, text=True, timeout=300)
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", PACKAGE],
                             capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create its venv: {exc}"
    if pip.returncode != 0:
        tail = (pip.stderr or pip.stdout or "").strip().splitlines()
        return None, f"pip install {PACKAGE} failed: {tail[-1] if tail else pip.returncode}"
    marker.touch()
    return str(python), None


def pyworker(python: str, t: Target, schema: str, jobs: int) -> Timing:
    proc = subprocess.run([python, "-I", str(DRIVER), "drain", t.ruby_url, RECEIVER, str(jobs)],
                          cwd=procs.ROOT, env=search_path_env(schema), capture_output=True,
                          text=True, timeout=procs.TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()
        raise BenchError(f"pyworker driver exited {proc.returncode}: {tail[-1] if tail else ''}")
    return result_of(proc.stdout, jobs)


def _users(table: Table) -> str:
    """The receivers' table, one row (id 1), which Ruby's worker loads for every job."""
    name = unique_table("users")
    table.execute(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, name varchar(255))")
    table.execute(f"INSERT INTO {name} (id, name) VALUES (1, 'bench')")
    return name


def noop_delay(ctx: Any) -> None:
    """The noop scenario's `.delay` table on PostgreSQL: dj, Ruby and pyworker on one kind of row."""
    targets = ctx.on("postgresql")
    if not targets:
        return
    t = targets[0]
    ctx.log("noop postgresql .delay (dj, ruby, rubydj-pyworker)")
    python, missing = venv_python(ctx.log)
    runs: dict[str, list[Timing]] = {"dj": [], "ruby": [], "pyworker": []}
    failed: dict[str, str] = {}
    if ctx.ruby_missing is not None:
        failed["ruby"] = ctx.ruby_missing
    if missing:
        failed["pyworker"] = missing
    with Table(t, "delay") as table:
        users = _users(table)
        schema = unique_table("pyw")
        try:
            for sql in view_sql(schema, table.name):
                table.execute(sql)
            for _ in range(ctx.rounds):
                for kind in runs:
                    if kind in failed:
                        continue
                    table.clear()
                    table.insert(DELAY_HANDLER, ctx.jobs, queue=QUEUE)
                    try:
                        if kind == "dj":
                            timing = Timing.of(procs.child(
                                "dj", {"url": t.url, "table": table.name, "jobs": ctx.jobs}))
                        elif kind == "ruby":
                            timing = procs.ruby(t, table.name, ctx.jobs, users=users)
                        else:
                            assert python is not None
                            timing = pyworker(python, t, schema, ctx.jobs)
                    except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
                        failed[kind] = str(exc).strip().splitlines()[0]
                        continue
                    runs[kind].append(timing)
        finally:
            table.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            table.execute(f"DROP TABLE IF EXISTS {users}")
    s = Section(f"noop, .delay rows: drain {ctx.jobs:,} `user.delay.noop` jobs on PostgreSQL, "
                f"queue default, one worker (jobs/s, best of {ctx.rounds})",
                ["worker", "jobs/s", "dj / this", "CPU us/job", ""])
    best = {k: max(v, key=lambda x: x.rate) for k, v in runs.items() if v}
    dj = best.get("dj")
    names = {"dj": "dj", "ruby": "ruby delayed_job 4.1.9", "pyworker": "rubydj-pyworker 1.2.1"}
    for kind, label in names.items():
        if kind in best:
            b = best[kind]
            s.add(label, rate(b.rate), ratio(dj.rate, b.rate) if dj else "-", f"{b.cpu_us:,.0f}", "")
        else:
            s.add(label, "-", "-", "-", f"not run: {failed.get(kind, 'no result')}")
    s.note("rows: Delayed::PerformableMethod on an ActiveRecord User (id 1), as delayed_job 4.1.9 "
           "on Rails 6.1 writes `user.delay.noop`; the same rows for all three, queue 'default'")
    s.note("dj: work_off(N) with a `User#noop` handler; ruby: Delayed::Worker#work_off(N), which "
           "loads the User row (SELECT by id) before each job; rubydj-pyworker: its Worker's "
           "get_job + handle_job loop (UPDATE … WHERE id IN (SELECT … FOR UPDATE) RETURNING, then "
           "DELETE + COMMIT), from a venv of its own, reading the table through a view named "
           "delayed_jobs (its SQL names no other table); it dispatches on the receiver's class "
           "(a registered Python `User` class), not on the method")
    if dj and "pyworker" in best:
        ctx.report.target("noop postgresql .delay: dj vs rubydj-pyworker (reported)",
                          ratio(dj.rate, best["pyworker"].rate), None)
    ctx.report.sections.append(s)


def pickup_variant(log: Callable[[str], None] = print) -> tuple[Variant | None, str | None]:
    """pyworker as one more idle worker in the latency scenario (benchmarks/pickup.py), on
    `user.delay.stamp` rows in queue default; or (None, why it cannot run)."""
    python, missing = venv_python(log)
    if python is None:
        return None, missing
    schema = unique_table("pyw")

    def setup(table: Table) -> None:
        for sql in view_sql(schema, table.name):
            table.execute(sql)

    def teardown(table: Table) -> None:
        table.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def command(t: Target, v: Variant) -> tuple[list[str], dict[str, str]]:
        return ([python, "-I", str(DRIVER), "pickup", t.ruby_url, RECEIVER, str(v.stamps)],
                search_path_env(schema))

    handler = delay_handler(RECEIVER, 1, "bench", "stamp")
    return Variant("rubydj-pyworker", setup=setup, teardown=teardown, command=command,
                   handler=lambda seq: handler, queue=QUEUE, optional=True), None
