"""Drive the Ruby side (tests/interop/ruby/harness.rb) and read the side table `job_runs`.

Every job that performs, on either side, inserts one row into `{table}_runs`:
`(job_key, runner, worker, job_id, attempts, note)`. Ruby's jobs do it in jobs.rb, Python's
handlers in tests/interop/pyjobs.py. "Ran exactly once, by the right side" is then a query.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, clean_env

HARNESS = Path(__file__).resolve().parent / "ruby" / "harness.rb"
PYTHON = sys.executable

_ruby_reason: list[str | None] = []


def ruby_missing() -> str | None:
    """Why real Ruby with delayed_job cannot run here, or None when it can."""
    if _ruby_reason:
        return _ruby_reason[0]
    reason: str | None = None
    if shutil.which("ruby") is None:
        reason = "ruby is not installed (apt-get install ruby ruby-delayed-job-active-record …)"
    else:
        probe = subprocess.run(
            ["ruby", "-e", 'require "active_record"; require "active_job"; require "delayed_job"; '
                           'require "delayed_job_active_record"; require "mysql2"; require "pg"'],
            capture_output=True, text=True, timeout=60,
        )
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            reason = f"Ruby delayed_job / ActiveRecord gems are missing: {last}"
    _ruby_reason.append(reason)
    return reason


def ruby_url(url: str) -> str:
    """The ActiveRecord URL for a SQLAlchemy one (mysql+pymysql → mysql2, postgresql+psycopg → postgresql)."""
    u = make_url(url)
    scheme = {"mysql": "mysql2", "mariadb": "mysql2", "postgresql": "postgresql"}[u.get_backend_name()]
    auth = u.username or ""
    if u.password:
        auth += f":{u.password}"
    host = u.host or "127.0.0.1"
    port = f":{u.port}" if u.port else ""
    return f"{scheme}://{auth}@{host}{port}/{u.database}"


# -- the Ruby harness -------------------------------------------------------------------------


@dataclass
class Ruby:
    """The Rails app and its delayed_job workers, one harness.rb process per call."""

    url: str  # SQLAlchemy URL of the shared database
    table: str

    def _args(self, command: str, *extra: str) -> list[str]:
        return ["ruby", str(HARNESS), command, "--url", ruby_url(self.url), "--table", self.table,
                *extra]

    def run(self, command: str, *extra: str, input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(self._args(command, *extra), input=input, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(
                f"harness.rb {command} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
            )
        return proc.stdout

    def schema(self) -> None:
        self.run("schema")

    def enqueue(self, specs: Sequence[dict[str, Any]]) -> list[int]:
        """Enqueue the Rails way; see harness.rb `enqueue` for the spec format."""
        return list(json.loads(self.run("enqueue", input=json.dumps(list(specs)))))

    def work_args(self, *, queues: Sequence[str] = (), max_run_time: int | None = None,
                  max_attempts: int | None = None, sleep_delay: float = 0.1,
                  exit_on_complete: bool = True, work_off: int | None = None,
                  name_prefix: str | None = None,
                  strategy: str | None = None, drain: bool = False) -> list[str]:
        extra: list[str] = ["--sleep-delay", str(sleep_delay)]
        if queues:
            extra += ["--queues", ",".join(queues)]
        if max_run_time is not None:
            extra += ["--max-run-time", str(max_run_time)]
        if max_attempts is not None:
            extra += ["--max-attempts", str(max_attempts)]
        if exit_on_complete:
            extra.append("--exit-on-complete")
        if work_off is not None:
            extra += ["--work-off", str(work_off)]
        if name_prefix:
            extra += ["--name-prefix", name_prefix]
        if strategy:
            extra += ["--strategy", strategy]
        if drain:
            extra.append("--drain")
        return self._args("work", *extra)

    def work(self, *, timeout: float = 120, **options: Any) -> str:
        """A Ruby worker run to completion (exit_on_complete, or work_off N); returns its stdout."""
        args = self.work_args(**options)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"ruby worker exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc.stdout

    def spawn_worker(self, log_path: Path, **options: Any) -> subprocess.Popen[bytes]:
        """A Ruby worker process in the background; its log (stdout+stderr) goes to log_path."""
        out = log_path.open("wb")
        try:
            return subprocess.Popen(self.work_args(**options), stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    def inspect(self, ids: Iterable[int] = (), *, worker_name: str | None = None,
                max_run_time: int | None = None) -> list[dict[str, Any]]:
        """Ruby's view of rows: Delayed::Job#failed?, attempts, run_at, last_error, name, ready."""
        extra: list[str] = []
        ids = list(ids)
        if ids:
            extra += ["--ids", ",".join(str(i) for i in ids)]
        if worker_name:
            extra += ["--worker-name", worker_name]
        if max_run_time is not None:
            extra += ["--max-run-time", str(max_run_time)]
        return list(json.loads(self.run("inspect", *extra)))

    def destroy(self, ids: Iterable[int]) -> None:
        self.run("destroy", "--ids", ",".join(str(i) for i in ids))


def ruby_time(text: str | None) -> datetime | None:
    """A harness.rb ISO time (naive UTC) back to a naive datetime."""
    return None if text is None else datetime.fromisoformat(text)


# -- the side table ---------------------------------------------------------------------------


def runs_table(table: str) -> sa.Table:
    return sa.Table(
        f"{table}_runs",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("job_key", sa.String(255), nullable=False),
        sa.Column("runner", sa.String(255), nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("job_id", sa.BigInteger),
        sa.Column("attempts", sa.Integer),
        sa.Column("note", sa.String(255)),
        sa.Column("created_at", sa.DateTime),
    )


@dataclass
class Run:
    job_key: str
    runner: str
    worker: str | None
    job_id: int | None
    attempts: int | None
    note: str | None
    created_at: datetime | None = None


@dataclass
class Runs:
    """`{table}_runs`: who ran what. Safe to share between threads (one pooled engine)."""

    url: str
    table: str
    engine: sa.Engine = field(init=False)
    t: sa.Table = field(init=False)

    def __post_init__(self) -> None:
        self.engine = sa.create_engine(self.url, pool_size=12, max_overflow=12, pool_pre_ping=True)
        self.t = runs_table(self.table)

    @classmethod
    def from_env(cls) -> Runs:
        return cls(os.environ["INTEROP_RUNS_URL"], os.environ["INTEROP_RUNS_TABLE"])

    def record(self, key: str, *, runner: str = "python", worker: str | None = None,
               job_id: int | None = None, attempts: int | None = None, note: str | None = None) -> None:
        """One job performed (or one phase of it, with a note); retried while the database is away."""
        values = {"job_key": str(key), "runner": runner, "worker": worker, "job_id": job_id,
                  "attempts": attempts, "note": note,
                  "created_at": datetime.now(UTC).replace(tzinfo=None)}
        deadline = time.monotonic() + 90
        while True:
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(self.t).values(**values))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def all(self) -> list[Run]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.t).order_by(self.t.c.id)).all()
        return [Run(r.job_key, r.runner, r.worker, r.job_id, r.attempts, r.note, r.created_at)
                for r in rows]

    def performed(self) -> list[Run]:
        """Runs without a note: one per attempt that reached the job's body."""
        return [r for r in self.all() if r.note is None]

    def counts(self) -> Counter[str]:
        return Counter(r.job_key for r in self.performed())

    def dispose(self) -> None:
        self.engine.dispose()


# -- Python worker processes ------------------------------------------------------------------


def py_worker_args(url: str, table: str, *, worker_id: str, concurrency: int = 1,
                   exit_on_complete: bool = True, max_run_time: float | None = None,
                   sleep_delay: float = 0.1) -> list[str]:
    args = [PYTHON, "-m", "dj_consumer.cli", "work", "--database-url", url, "--table-name", table,
            "--import", "tests.interop.pyjobs", "--worker-id", worker_id, "--log-format", "json",
            "--sleep-delay", str(sleep_delay), "-n", str(concurrency)]
    if exit_on_complete:
        args.append("--exit-on-complete")
    if max_run_time is not None:
        args += ["--max-run-time", str(max_run_time)]
    return args


def py_env(url: str, table: str, **more: str) -> dict[str, str]:
    return clean_env(INTEROP_RUNS_URL=url, INTEROP_RUNS_TABLE=table, PYTHONUNBUFFERED="1", **more)


def spawn_py_worker(url: str, table: str, log_path: Path, *, env: dict[str, str] | None = None,
                    **options: Any) -> subprocess.Popen[bytes]:
    """`python -m dj_consumer.cli work --import tests.interop.pyjobs …` in the background."""
    out = log_path.open("wb")
    try:
        return subprocess.Popen(py_worker_args(url, table, **options), cwd=ROOT,
                                env=env or py_env(url, table), stdout=out,
                                stderr=subprocess.STDOUT)
    finally:
        out.close()


def json_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a worker's output (other lines skipped)."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def events_named(path_or_text: Path | str, name: str) -> list[dict[str, Any]]:
    text = path_or_text.read_text(errors="replace") if isinstance(path_or_text, Path) else path_or_text
    return [e for e in json_events(text) if e.get("event") == name]


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_all(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float,
             logs: Sequence[Path] = ()) -> list[int]:
    """Wait for every process; on timeout kill them all and fail with their log tails."""
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            tails = "\n".join(f"--- {p}\n{tail(p)}" for p in logs)
            raise AssertionError(f"workers still running after {timeout}s\n{tails}") from None
    return codes


def stop_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Teardown: kill (by pid) whatever we started and is still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def failed_tails(codes: Sequence[int], logs: Sequence[Path], lines: int = 15) -> str:
    """The log tails of the processes that exited non-zero, for an assertion message."""
    return f"exit codes {list(codes)}\n" + "\n".join(
        f"--- {log.name} (exit {code})\n{tail(log, lines)}"
        for code, log in zip(codes, logs, strict=False) if code != 0
    )


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
