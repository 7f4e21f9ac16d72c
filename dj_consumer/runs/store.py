"""RunsStore: the run records' statements (runs/sql.py) on a Connection the caller gives.

Nothing here opens a transaction of its own: the worker runs `finish` in the transaction that
writes the job's outcome, `progress` and `cancel_requested` on its kept connection. Times are
naive UTC, and on MySQL without fractions (Rails' datetime), as in the delayed_jobs table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import DateTime

from dj_consumer.errors import ConfigError, exception_class
from dj_consumer.models import Job
from dj_consumer.runs import sql as q
from dj_consumer.runs.records import Run
from dj_consumer.runs.schema import (
    BATCH_COLUMNS,
    FINAL_STATES,
    PART_COLUMNS,
    RUN_COLUMNS,
    STATES,
    parts_name,
)

#: Binds written as datetimes (SQLite keeps text otherwise, and Python 3.12 deprecates the
#: driver's own conversion), and lists expanded into `IN (…)`.
_TIME_BINDS = ("run_now", "run_cutoff", "run_horizon", "run_finished_at", "run_started")
_LIST_BINDS = ("run_ids", "run_batch_ids")
#: Result columns read as datetimes.
TIME_COLUMNS = ("started_at", "finished_at", "cancel_requested_at", "created_at", "updated_at",
                "completed_at", "locked_at", "failed_at")
#: Characters of an error message kept in the record (the traceback stays in last_error).
MAX_ERROR_TEXT = 4000


class RunsStore:
    """The statements on one database's runs, delayed_jobs and batch tables."""

    def __init__(self, dialect: Dialect, *, runs: str = "delayed_job_runs",
                 jobs: str = "delayed_jobs", batches: str = "delayed_job_batches",
                 has_batches: bool = True) -> None:
        name = dialect.name
        self.dialect = "mysql" if name == "mariadb" else name
        if self.dialect not in ("mysql", "postgresql", "sqlite"):
            raise ConfigError(f"run records need MySQL/MariaDB, PostgreSQL or SQLite, not {name}")
        self._sa_dialect = dialect
        quote = dialect.identifier_preparer.quote
        self.names = {"runs": runs, "jobs": jobs, "batches": batches,
                      "parts": parts_name(batches)}
        self._quoted = {k: quote(v) for k, v in self.names.items()}
        self.has_batches = has_batches
        self._cache: dict[tuple[str, str], TextClause] = {}

    # -- statements ----------------------------------------------------------------------------

    def statement(self, template: str | Mapping[str, str], **fill: str) -> TextClause:
        """A statement of runs/sql.py for these tables and this dialect, binds typed."""
        if not isinstance(template, str):
            template = template.get(self.dialect) or template["other"]
        key = (template, repr(sorted(fill.items())) if fill else "")
        stmt = self._cache.get(key)
        if stmt is None:
            sql = template
            for name, value in {**self._quoted, **fill}.items():
                sql = sql.replace("{" + name + "}", value)
            stmt = text(sql)
            binds = [bindparam(n, type_=DateTime()) for n in _TIME_BINDS if n in stmt._bindparams]
            binds += [bindparam(n, expanding=True) for n in _LIST_BINDS if n in stmt._bindparams]
            if binds:
                stmt = stmt.bindparams(*binds)
            if sql.lstrip().upper().startswith("SELECT"):
                stmt = stmt.columns(**{c: DateTime() for c in TIME_COLUMNS if c in sql})  # type: ignore[assignment]
            self._cache[key] = stmt
        return stmt

    def ts(self, value: datetime | None) -> datetime | None:
        """Naive UTC; MySQL `datetime` keeps no fractions (drop them, as ActiveRecord does)."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = (value - value.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
        return value.replace(microsecond=0) if self.dialect == "mysql" else value

    # -- the worker's calls ------------------------------------------------------------------

    def start(self, conn: Connection, job: Job, now: datetime) -> None:
        """An attempt of `job` begins: its record (created if missing) says `running`, with
        `locked_by`, `started_at` and run_key/owner_id/batch_id/batch_index from its payload."""
        self.start_statement(job, now).run(conn)

    def start_statement(self, job: Job, now: datetime) -> Bound:
        """start as (statement, binds)."""
        fields = payload_fields(job.payload)
        return Bound(self.statement(q.START), {
            "run_job_id": job.id, "run_name": job.name[:255], "run_queue": job.queue,
            "run_attempts": job.attempts, "run_locked_by": job.locked_by,
            "run_now": self.ts(now), **fields})

    def progress(self, conn: Connection, job_id: int, current: int, total: int | None = None,
                 stage: str | None = None, *, now: datetime) -> bool:
        """One UPDATE; None keeps the total or stage. False when the record is not running."""
        result = conn.execute(self.statement(q.PROGRESS), {
            "run_job_id": job_id, "run_current": int(current),
            "run_total": None if total is None else int(total),
            "run_stage": None if stage is None else str(stage)[:255], "run_now": self.ts(now),
        })
        return bool(result.rowcount)

    def save_checkpoint(self, conn: Connection, job_id: int, data: Any, *, now: datetime) -> None:
        """What this attempt keeps for the next one (JSON), e.g. http_steps' finished steps."""
        conn.execute(self.statement(q.SAVE_CHECKPOINT), {
            "run_job_id": job_id, "run_now": self.ts(now),
            "run_checkpoint": None if data is None else json.dumps(data, ensure_ascii=False),
        })

    def finish(self, conn: Connection, job_id: int, state: str, *, attempts: int,
               now: datetime, result: str | None = None,
               error: BaseException | str | None = None, name: str = "",
               queue: str | None = None) -> None:
        """The attempt's outcome, in the caller's transaction (the worker's outcome write).
        `result` is JSON text (records.result_json); `error` an exception or last_error.
        `name`/`queue` fill a record that does not exist yet."""
        self.finish_statement(job_id, state, attempts=attempts, now=now, result=result,
                              error=error, name=name, queue=queue).run(conn)

    def finish_statement(self, job_id: int, state: str, *, attempts: int, now: datetime,
                         result: str | None = None, error: BaseException | str | None = None,
                         name: str = "", queue: str | None = None,
                         if_deleted: bool = False) -> Bound:
        """finish as (statement, binds), to travel in a script with the outcome's own.
        `if_deleted` (MySQL): it writes nothing unless the statement just before it (the
        success's fenced DELETE) took the row."""
        if state not in STATES or state == "running":
            raise ValueError(f"a finished attempt's state is one of {STATES[1:]}, got {state!r}")
        error_class, message = error_fields(error)
        if if_deleted and self.dialect != "mysql":
            raise ValueError("finish if_deleted is MySQL's (ROW_COUNT())")
        return Bound(self.statement(q.FINISH_IF_DELETED if if_deleted else q.FINISH), {
            "run_job_id": job_id, "run_name": name[:255], "run_queue": queue,
            "run_state": state, "run_attempts": attempts, "run_result": result,
            "run_error_class": error_class, "run_error_message": message,
            "run_finished_at": self.ts(now) if state in FINAL_STATES else None,
            "run_now": self.ts(now),
        })

    def succeeded_if_deleted(self, job: Job, *, now: datetime, result: str | None,
                             started: datetime | None) -> Bound:
        """MySQL: a success's record after its DELETE in the same script (after `SET
        @dj_deleted = ROW_COUNT()`): FINISH_IF_DELETED, or with START's fields when the
        running write never went out, both in one upsert."""
        if started is None:
            return self.finish_statement(job.id, "succeeded", attempts=job.attempts, now=now,
                                         result=result, name=job.name, queue=job.queue,
                                         if_deleted=True)
        params = {"run_job_id": job.id, "run_name": job.name[:255], "run_queue": job.queue,
                  "run_attempts": job.attempts, "run_result": result, "run_now": self.ts(now),
                  "run_started": self.ts(started), **payload_fields(job.payload)}
        return Bound(self.statement(q.STARTED_SUCCEEDED_IF_DELETED), params)

    def pg_succeeded(self, job: Job, *, owned: str, now: datetime, result: str | None,
                     started: datetime | None) -> Bound:
        """PostgreSQL: a success's fenced DELETE (`owned`: the store's locked_by test, binds
        :id and :me) and its record's final write in one statement (sql.PG_SUCCEEDED); it
        returns a row only when the DELETE took the row."""
        params: dict[str, Any] = {"run_job_id": job.id, "run_name": job.name[:255],
                                  "run_queue": job.queue, "run_attempts": job.attempts,
                                  "run_result": result, "run_now": self.ts(now)}
        if started is None:
            return Bound(self.statement(q.PG_SUCCEEDED, owned=owned), params)
        params.update(payload_fields(job.payload), run_started=self.ts(started))
        params.pop("run_locked_by", None)
        return Bound(self.statement(q.PG_STARTED_SUCCEEDED, owned=owned), params)

    def cancel_requested(self, conn: Connection, job_ids: Iterable[int]) -> set[int]:
        """Which of these jobs has a cancel request (cancel_requested_at set): one SELECT."""
        ids = sorted(set(job_ids))
        if not ids:
            return set()
        rows = conn.execute(self.statement(q.CANCEL_REQUESTED), {"run_ids": ids}).all()
        return {int(r[0]) for r in rows}

    def prune(self, conn: Connection, *, now: datetime, retention: float,
              batch_size: int = 500, max_batches: int = 20) -> int:
        """Delete final records (and completed batches) older than `retention` seconds, and
        unfinished records that old whose job is gone: `batch_size` rows per statement, each
        committed at once, at most `max_batches` statements per kind. Returns the rows removed."""
        params = {"run_cutoff": self.ts(now - timedelta(seconds=retention)),
                  "run_limit": batch_size}
        removed = 0
        for template in (q.PRUNE_FINAL, q.PRUNE_ORPHANS):
            for _ in range(max_batches):
                count = int(conn.execute(self.statement(template), params).rowcount or 0)
                _commit(conn)
                removed += count
                if count < batch_size:
                    break
        if self.has_batches:
            removed += self._prune_batches(conn, params, max_batches)
        return removed

    def _prune_batches(self, conn: Connection, params: dict[str, Any], max_batches: int) -> int:
        removed = 0
        for _ in range(max_batches):
            ids = [r[0] for r in conn.execute(self.statement(q.OLD_BATCHES), params).all()]
            if ids:
                conn.execute(self.statement(q.DELETE_PARTS), {"run_batch_ids": ids})
                removed += int(conn.execute(self.statement(q.DELETE_BATCHES),
                                            {"run_batch_ids": ids}).rowcount or 0)
            _commit(conn)
            if len(ids) < params["run_limit"]:
                break
        return removed

    # -- reads -------------------------------------------------------------------------------------

    def get(self, conn: Connection, job_id: int) -> Run | None:
        row = conn.execute(self.statement(q.GET_RUN), {"run_job_id": job_id}).mappings().first()
        return None if row is None else Run.from_row(row)

    def find(self, conn: Connection, *, run_key: str | None = None, owner_id: Any = None,
             state: str | None = None, name: str | None = None, batch_id: str | None = None,
             limit: int = 100) -> list[Run]:
        """Records matching every filter given, the latest first."""
        given = {"run_key": run_key, "owner_id": owner_id, "state": state, "name": name,
                 "batch_id": batch_id}
        if state is not None and state not in STATES:
            raise ConfigError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        where = " AND ".join(q.FIND_FILTERS[k] for k, v in given.items() if v is not None)
        params = {("run_key" if k == "run_key" else f"run_{k}"): str(v)
                  for k, v in given.items() if v is not None}
        stmt = self.statement(q.FIND_RUNS, where=where or "1 = 1")
        rows = conn.execute(stmt, {**params, "run_limit": limit}).mappings().all()
        return [Run.from_row(r) for r in rows]


class Bound:
    """A statement with its binds, run later on the caller's connection (or in its script)."""

    __slots__ = ("params", "stmt")

    def __init__(self, stmt: TextClause, params: dict[str, Any]) -> None:
        self.stmt, self.params = stmt, params

    def run(self, conn: Connection) -> Any:
        return conn.execute(self.stmt, self.params)


def detect(bind: Engine | Connection, *, runs_table: str = "delayed_job_runs",
           table_name: str = "delayed_jobs",
           batches_table: str = "delayed_job_batches") -> RunsStore | None:
    """The RunsStore when the runs table exists, else None (the worker then writes nothing
    and pays nothing). Called once at start. A runs table without a column we write is one
    ConfigError line naming it."""
    insp = inspect(bind)
    if not insp.has_table(runs_table):
        return None
    _check_columns(insp, runs_table, RUN_COLUMNS)
    has_batches = insp.has_table(batches_table)
    if has_batches:
        _check_columns(insp, batches_table, BATCH_COLUMNS)
        _check_columns(insp, parts_name(batches_table), PART_COLUMNS)
    return RunsStore(bind.dialect, runs=runs_table, jobs=table_name, batches=batches_table,
                     has_batches=has_batches)


def _check_columns(insp: Any, table: str, columns: Iterable[Any]) -> None:
    if not insp.has_table(table):
        raise ConfigError(f"table {table!r} is missing; `dj-consumer schema --create --runs` "
                          "makes it (or the migration of `dj-consumer schema --runs --rails`)")
    have = {c["name"] for c in insp.get_columns(table)}
    missing = [c.name for c in columns if c.name not in have]
    if missing:
        raise ConfigError(f"table {table!r} has no column {missing[0]!r}"
                          + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
                          + "; compare it with `dj-consumer schema --runs --rails`")


def payload_fields(payload: Any) -> dict[str, Any]:
    """run_key, owner_id, batch_id and batch_index from a payload's attributes (for an
    ActiveJob, from its last hash argument), as the record's binds."""
    source: Any = payload
    if isinstance(payload, Mapping) and "job_class" in payload \
            and isinstance(payload.get("arguments"), list):
        source = next((a for a in reversed(payload["arguments"]) if isinstance(a, Mapping)), {})
    if not isinstance(source, Mapping):
        source = {}

    def text_of(key: str) -> str | None:
        value = source.get(key)
        return None if value is None or isinstance(value, Mapping | list) else str(value)[:255]

    index = source.get("batch_index")
    return {"run_key": text_of("run_key"), "run_owner_id": text_of("owner_id"),
            "run_batch_id": text_of("batch_id"),
            "run_batch_index": index if isinstance(index, int) and not isinstance(index, bool)
            else None}


def error_fields(error: BaseException | str | None) -> tuple[str | None, str | None]:
    """(error_class, error_message) for the record: the exception's class and message, or
    last_error's message without its class and traceback."""
    if error is None:
        return None, None
    if isinstance(error, BaseException):
        name = exception_class(error)
        return name[:255], (str(error) or type(error).__name__)[:MAX_ERROR_TEXT]
    message, traced, trace = error.partition("\nTraceback (most recent call last):")
    kind, named, rest = message.partition(": ")
    if traced and named and " " not in kind and trace.rstrip().endswith("\n" + message):
        message = rest  # format_error's "Class: message" head: the message alone
    return None, message[:MAX_ERROR_TEXT]


def _commit(conn: Connection) -> None:
    if conn.in_transaction():
        conn.commit()
