"""The Python API a Rails-side or Python-side caller uses without a worker: read run records,
wait for one to finish, cancel a job, read a batch.

A `Runs` client talks to one database. The module functions (dj_consumer.runs.get …) take
`config=` (a database URL, a mapping of config keys, or a Config) or, without it, find the
database as `dj-consumer` does: DJ_* variables and the config file (DJ_CONFIG, else
./dj_consumer.toml, else [tool.dj_consumer] in ./pyproject.toml).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from dj_consumer.clock import Clock, SystemClock
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError, HandlerParseError
from dj_consumer.runs import sql as q
from dj_consumer.runs.batches import DEFAULT_BATCH_SIZE, BatchEnqueued
from dj_consumer.runs.records import Batch, Run, RunNotFound, RunTimeout
from dj_consumer.runs.store import RunsStore, detect

ConfigLike = Config | Mapping[str, Any] | str | None

#: wait(): the first poll interval and the longest one (it doubles in between).
FIRST_POLL = 0.05
MAX_POLL = 1.0


def resolve_config(config: ConfigLike = None) -> Config:
    """`config` as a Config; None: the DJ_* variables over the config file, as `dj-consumer`."""
    if isinstance(config, Config):
        return config
    if isinstance(config, str):
        return Config.from_mapping({"database_url": config})
    if config is not None:
        return Config.from_mapping(config)
    from dj_consumer import settings

    found = settings.find_file(os.environ.get("DJ_CONFIG"))
    file_values = settings.load_file(*found) if found else {}
    try:
        return settings.layered(file_values, os.environ, {})
    except ConfigError as exc:
        if "database_url is required" in str(exc):
            raise ConfigError("no database: pass config= (a database URL or config keys), or "
                              "set DJ_DATABASE_URL, or write dj_consumer.toml") from None
        raise


@dataclass(frozen=True)
class Cancelled:
    """What cancel did: `outcome` is deleted, failed (kept with --keep), requested (running:
    the worker stops it), finished (nothing to cancel), missing, already_failed or
    running_untracked (running, and no runs table to ask it to stop)."""

    job_id: int
    outcome: str
    message: str
    run: Run | None = None

    @property
    def done(self) -> bool:
        """Was the cancel carried out or requested?"""
        return self.outcome in ("deleted", "failed", "requested")


class Runs:
    """Run records, cancel and batches on one database (thread-safe; keep one per process)."""

    def __init__(self, config: ConfigLike = None, *, clock: Clock | None = None) -> None:
        from dj_consumer.db import make_engine

        self.config = resolve_config(config)
        self.clock: Clock = clock or SystemClock()
        self.engine = make_engine(self.config.url, self.config, autocommit=False)
        self._store: RunsStore | None = None
        self._looked = False
        self._jobs_checked = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the tables --------------------------------------------------------------------------

    @property
    def store(self) -> RunsStore | None:
        """The RunsStore when the runs table exists (looked for once)."""
        with self._lock:
            if not self._looked:
                cfg = self.config
                with _one_line(cfg), self.engine.connect() as conn:
                    self._store = detect(conn, runs_table=cfg.runs_table,
                                         table_name=cfg.table_name,
                                         batches_table=cfg.batches_table)
                self._looked = True
            return self._store

    def check_jobs(self) -> None:
        """The delayed_jobs table has every column Rails' migration makes (looked at once, before
        the first statement on it): otherwise one ConfigError line naming the table and the
        column, as every command gives, not the database's words about one statement."""
        with self._lock:
            if self._jobs_checked:
                return
            from dj_consumer.db import safe_url
            from dj_consumer.schema import check_columns

            cfg = self.config
            with _one_line(cfg), self.engine.connect() as conn:
                check_columns(conn, cfg.table_name, safe_url(cfg.url))
            self._jobs_checked = True

    def required(self) -> RunsStore:
        store = self.store
        if store is None:
            raise ConfigError(f"there is no run records table {self.config.runs_table!r}: "
                              "create it with `dj-consumer schema --create --runs` (or the "
                              "migration `dj-consumer schema --runs --rails` prints)")
        return store

    # -- reads --------------------------------------------------------------------------------

    def get(self, job_id: int) -> Run | None:
        """The run record of job `job_id`, or None (not started yet, or never tracked)."""
        store = self.required()
        with self.engine.connect() as conn:
            return store.get(conn, job_id)

    def find(self, *, run_key: str | None = None, owner_id: Any = None,
             state: str | None = None, name: str | None = None, batch_id: str | None = None,
             limit: int = 100) -> list[Run]:
        """The records matching every filter given, the latest first."""
        store = self.required()
        with self.engine.connect() as conn:
            return store.find(conn, run_key=run_key, owner_id=owner_id, state=state, name=name,
                              batch_id=batch_id, limit=limit)

    def wait(self, job_id: int, timeout: float, *, first_poll: float = FIRST_POLL,
             max_poll: float = MAX_POLL) -> Run:
        """Poll until the job's record is final (succeeded, failed, cancelled) and return it;
        RunTimeout after `timeout` seconds, RunNotFound when neither the job nor a record is
        there. A rescheduled job is not finished: it runs again."""
        store = self.required()
        self.check_jobs()
        deadline = self.clock.monotonic() + timeout
        pause = first_poll
        while True:
            with self.engine.connect() as conn:
                run = store.get(conn, job_id)
                if run is None and not self._job_exists(conn, job_id):
                    run = store.get(conn, job_id)  # it may have finished in between
                    if run is None:
                        raise RunNotFound(f"no job {job_id} and no run record for it")
            if run is not None and run.finished:
                return run
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise RunTimeout(f"job {job_id} did not finish within {timeout:g} s "
                                 f"({describe(run)})")
            self.clock.sleep(min(pause, left))
            pause = min(pause * 2, max_poll)

    def _job_exists(self, conn: Connection, job_id: int) -> bool:
        store = self.required()
        return conn.execute(store.statement(q.JOB_EXISTS), {"run_job_id": job_id}).first() \
            is not None

    # -- cancel -----------------------------------------------------------------------------------

    def cancel(self, job_id: int, *, keep: bool = False) -> Cancelled:
        """Cancel job `job_id`. Waiting (not locked by a live worker): deleted — with `keep`,
        failed with last_error "cancelled" — and its record says cancelled, in one transaction,
        fenced so a job a worker has just locked is left to it. Running: its record's
        cancel_requested_at is set; the worker stops it (j.cancelled)."""
        from dj_consumer.runs.cancelling import cancel

        self.check_jobs()
        store = self.store
        with self.engine.begin() as conn:
            return cancel(conn, store, self.tables(), job_id, keep=keep,
                          now=self.clock.now(),
                          horizon=timedelta(seconds=self.config.max_run_time))

    def tables(self) -> RunsStore:
        """Statements on the delayed_jobs table, whether or not the runs table exists."""
        cfg = self.config
        return self.store or RunsStore(self.engine.dialect, runs=cfg.runs_table,
                                       jobs=cfg.table_name, batches=cfg.batches_table,
                                       has_batches=False)

    # -- batches -------------------------------------------------------------------------------

    def enqueue_batch(self, name: str, items: Sequence[Any], *,
                      batch_size: int = DEFAULT_BATCH_SIZE, on_complete: str | None = None,
                      queue: str | None = None, priority: int = 0) -> BatchEnqueued:
        """Split `items` into rows of `batch_size` items for handler `name` (payload
        `{"batch_id", "batch_index", "items"}`) and a batch record, in one transaction."""
        from dj_consumer.runs.batches import enqueue_parts

        store = self.required()
        self.check_jobs()
        if not store.has_batches:
            raise ConfigError(f"there is no batches table {self.config.batches_table!r}: "
                              "create it with `dj-consumer schema --create --runs`")
        with self.engine.begin() as conn:
            enqueued = enqueue_parts(conn, store, name, items, batch_size=batch_size,
                                     on_complete=on_complete, queue=queue, priority=priority,
                                     now=self.clock.now())
        from dj_consumer.wakeup import ring_local

        ring_local(self.config)  # committed: idle workers of this process reserve now
        return enqueued

    def batch(self, batch_id: str) -> Batch | None:
        """The batch record; before it completes, `error_items` holds its parts' errors so far."""
        from dj_consumer.runs import batches

        with self.engine.connect() as conn:
            return batches.get_batch(conn, self.required(), batch_id)


@contextlib.contextmanager
def _one_line(cfg: Config) -> Iterator[None]:
    """A database error while looking at the tables as the one line a command prints."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            from dj_consumer.db import unreachable

            raise unreachable(cfg.url, exc) from None
        raise


def describe(run: Run | None) -> str:
    """`state: running, progress 3/10 (upload)` or `not started yet`."""
    if run is None:
        return "not started yet"
    text = f"state: {run.state}"
    if run.progress_current is not None:
        total = f"/{run.progress_total}" if run.progress_total is not None else ""
        stage = f" ({run.progress_stage})" if run.progress_stage else ""
        text += f", progress {run.progress_current}{total}{stage}"
    return text


def job_name(handler: str) -> str:
    """The dispatch name of a delayed_jobs handler, for a record cancel creates."""
    from dj_consumer import ruby_yaml

    try:
        return ruby_yaml.load(handler).name
    except HandlerParseError:
        return ruby_yaml.fallback_dispatch_name(handler) or "?"
