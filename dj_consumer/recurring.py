"""Recurring rows in the worker: delayed_cron_job's `cron` column and the `reoccur_in` /
`last_run_at` columns of the seed fork (docs/recurring.md says what Ruby does, and why).

`detect(store)` reads which of the columns the table has; the worker registers `Recurring`,
an outcome participant (outcomes.py), only when it has one. A table without them is worked
exactly as before.

Before a job runs, `prepare` reads its `cron`/`reoccur_in` (one primary-key SELECT, only on
tables with the columns): plain rows go on as any other (their success's DELETE still rides
with the next reserve); a cron row runs with no max attempts (0.9.0 never fails it for good,
so neither the failure hook nor a final failure can happen by count); a row whose cron or
interval dj_consumer cannot read is handed back unrun, for a Ruby worker.

After the run, in the outcome's transaction and fenced by locked_by:
- cron row (success, failure, timeout): the same row, attempts + 1, unlocked, run_at = the
  expression's next time after the DATABASE's now, last_error NULL or the run's error; cron
  cleared while it ran → the row is deleted; a handler that cannot be loaded is failed as
  any other job (deleted, or failed_at set and, as 0.9.0 does, attempts + 1 and the next
  run_at written beside it: it is never reserved again).
- reoccur_in row, success: run_at = the first run_at + k·interval after now (no drift, no
  burst), last_run_at = now, attempts 0, last_error NULL, unlocked. Failures: normal retry.
An interrupted run (shutdown) is unlocked with attempts unchanged, as any job.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy import DateTime, Text, bindparam, inspect, text
from sqlalchemy.sql.elements import TextClause

from dj_consumer import cron as cronlib
from dj_consumer.models import Failed, Interrupted, Job, Outcome, Succeeded
from dj_consumer.outcomes import Tx
from dj_consumer.store import Store

log = structlog.get_logger(__name__)

__all__ = ["Conventions", "Recurring", "detect"]

CRON, REOCCUR, PLAIN = "cron", "reoccur", "plain"
#: The beginning of the last_error of a handler that cannot be loaded (slots.py).
UNLOADABLE = "Job failed to load"
#: Jobs whose kind is remembered between prepare and their outcome, at most (a plain row's
#: success never reaches `instead`: its entry is dropped with the oldest).
KINDS_MAX = 10_000
#: How long a row whose schedule we cannot read is left alone before we look again.
REFUSE_TTL = 300.0


@dataclass(frozen=True)
class Conventions:
    """Which recurring columns the table has."""

    cron: bool = False
    reoccur_in: bool = False
    last_run_at: bool = False

    @property
    def reoccur(self) -> bool:
        return self.reoccur_in and self.last_run_at

    @property
    def any(self) -> bool:
        return self.cron or self.reoccur

    def describe(self) -> str:
        parts = []
        if self.cron:
            parts.append("cron (delayed_cron_job)")
        if self.reoccur:
            parts.append("reoccur_in/last_run_at (delayed_job fork)")
        elif self.reoccur_in or self.last_run_at:
            parts.append("reoccur_in without last_run_at (or the reverse): not used")
        return ", ".join(parts) or "none"


def detect(store: Store) -> Conventions:
    """The recurring columns of the store's table (the table must exist)."""
    with store.engine.connect() as conn:
        return conventions([c["name"] for c in inspect(conn).get_columns(store.config.table_name)])


def conventions(columns: list[str]) -> Conventions:
    return Conventions("cron" in columns, "reoccur_in" in columns, "last_run_at" in columns)


def _stmt(sql: str, *times: str) -> TextClause:
    binds: list[Any] = [bindparam(t, type_=DateTime()) for t in times]
    if ":last_error" in sql:
        binds.append(bindparam("last_error", type_=Text()))
    return text(sql).bindparams(*binds)


class Recurring:
    """The outcome participant for recurring rows (outcomes.Participant)."""

    def __init__(self, store: Store, conventions: Conventions, *, default_zone: str = "UTC") -> None:
        self.store = store
        self.conventions = conventions
        self.default_zone = default_zone
        self._kinds: dict[int, str] = {}
        self._refused: dict[int, float] = {}
        self._lock = threading.Lock()
        t, owned = store.table, store.sql.owned
        cols = [c for c, on in (("cron", conventions.cron), ("reoccur_in", conventions.reoccur))
                if on]
        select = ", ".join(cols)
        lock = "" if store.dialect == "sqlite" else " FOR UPDATE"
        mine = f"id = :id AND {owned}"
        self.read = text(f"SELECT {select} FROM {t} WHERE id = :id")
        self.read_mine = text(f"SELECT {select} FROM {t} WHERE {mine}{lock}")
        self.delete = text(f"DELETE FROM {t} WHERE {mine}")
        self.cron_done = _stmt(
            f"UPDATE {t} SET attempts = attempts + 1, run_at = :run_at, last_error = :last_error, "
            f"locked_at = NULL, locked_by = NULL, updated_at = :now WHERE {mine}", "run_at", "now")
        self.cron_failed = _stmt(
            f"UPDATE {t} SET attempts = attempts + 1, run_at = :run_at, failed_at = :now, "
            f"last_error = :last_error, locked_at = NULL, locked_by = NULL, updated_at = :now "
            f"WHERE {mine}", "run_at", "now")
        self.reoccurred = _stmt(
            f"UPDATE {t} SET run_at = :run_at, last_run_at = :now, attempts = 0, "
            f"last_error = NULL, locked_at = NULL, locked_by = NULL, updated_at = :now "
            f"WHERE {mine}", "run_at", "now")

    # -- before the run --------------------------------------------------------------------

    def refuses(self, job_id: int) -> bool:
        """A row whose schedule we could not read lately: not reserved again for a while."""
        until = self._refused.get(job_id)
        return until is not None and until > time.monotonic()

    def prepare(self, job: Job) -> Job | None:
        """Read the row's schedule; the job to run, or None: hand it back unrun."""
        try:
            row = self.store.db.retrying("recurring", lambda: self._read(job.id))
        except Exception as exc:  # unknown: the outcome's transaction reads it again
            job.log.warning("job.recurring_unknown", error=str(exc).splitlines()[0][:200])
            return job
        if row is None:
            return job
        cron_expr, interval = self._values(row)
        try:
            if cron_expr:
                cronlib.parse(cron_expr, default_zone=self.default_zone)
                kind = CRON
            elif interval:
                cronlib.parse_interval(interval)
                kind = REOCCUR
            else:
                kind = PLAIN
        except cronlib.CronError as exc:
            self._refuse(job, "cron", cron_expr, exc)
            return None
        except cronlib.CronUnavailable as exc:
            self._refuse(job, "cron", cron_expr, exc)
            return None
        except cronlib.IntervalError as exc:
            self._refuse(job, "reoccur_in", interval, exc)
            return None
        with self._lock:
            self._kinds[job.id] = kind
            if len(self._kinds) > KINDS_MAX:  # outcomes never recorded (a closed run): old
                for old in list(self._kinds)[: KINDS_MAX // 2]:
                    del self._kinds[old]
        if kind == CRON:
            return replace(job, max_attempts=sys.maxsize)  # 0.9.0: never failed by count
        return job

    def _read(self, job_id: int) -> Any:
        with self.store.db.connection() as conn:
            return conn.execute(self.read, {"id": job_id}).first()

    def _values(self, row: Any) -> tuple[str, str]:
        values = list(row)
        cron_expr = str(values.pop(0) or "").strip() if self.conventions.cron else ""
        interval = str(values.pop(0) or "").strip() if self.conventions.reoccur else ""
        return cron_expr, interval

    def _refuse(self, job: Job, column: str, value: str, exc: Exception) -> None:
        with self._lock:
            first = job.id not in self._refused
            self._refused[job.id] = time.monotonic() + REFUSE_TTL
        if first:
            job.log.warning("job.recurring_unsupported", column=column, value=value,
                            error=str(exc),
                            hint="handed back unrun, for a Ruby worker; not reserved again "
                                 f"by this worker for {REFUSE_TTL:g}s")

    # -- the outcome -----------------------------------------------------------------------

    def claims(self, job: Job) -> bool:
        return self._kinds.get(job.id) != PLAIN

    def instead(self, tx: Tx, job: Job, outcome: Outcome) -> bool | None:
        with self._lock:
            kind = self._kinds.pop(job.id, None)
        params = {"id": job.id, "me": tx.me}
        if isinstance(outcome, Interrupted):
            return None
        row = tx.execute(self.read_mine, params).first()
        if row is None:
            return False  # the lock is lost: nothing of ours to write
        cron_expr, interval = self._values(row)
        if cron_expr or kind == CRON:
            return self._cron(tx, job, outcome, cron_expr, params)
        if interval and isinstance(outcome, Succeeded):
            return self._reoccur(tx, job, interval, params)
        return None

    def _cron(self, tx: Tx, job: Job, outcome: Outcome, cron_expr: str,
              params: dict[str, Any]) -> bool | None:
        if not cron_expr:  # cleared while it ran: delayed_cron_job deletes the row
            return bool(tx.execute(self.delete, params).rowcount == 1)
        unloadable = isinstance(outcome, Failed) and outcome.last_error.startswith(UNLOADABLE)
        if unloadable and isinstance(outcome, Failed) and outcome.destroy:
            return None  # failed(job) with destroy_failed_jobs: a DELETE, as any job
        now = tx.db_now()
        error = None if isinstance(outcome, Succeeded) else getattr(outcome, "last_error", None)
        stmt = self.cron_failed if unloadable else self.cron_done
        try:
            run_at = cronlib.parse(cron_expr, default_zone=self.default_zone).next_after(now)
        except (cronlib.CronError, cronlib.CronUnavailable) as exc:
            # Changed while it ran to one we cannot read: kept, failed, for a human to fix.
            job.log.error("job.recurring_unsupported", column="cron", value=cron_expr,
                          error=str(exc), hint="the row is kept with failed_at set")
            error = "\n".join(filter(None, [f"dj_consumer cannot schedule cron {cron_expr!r}: "
                                            f"{exc}", error]))
            run_at, stmt = job.run_at or now, self.cron_failed
        values = {**params, "run_at": tx.ts(run_at), "now": tx.ts(now),
                  "last_error": None if error is None else self.store.clip(error)}
        return bool(tx.execute(stmt, values).rowcount == 1)

    def _reoccur(self, tx: Tx, job: Job, interval: str, params: dict[str, Any]) -> bool | None:
        try:
            every = cronlib.parse_interval(interval)
        except cronlib.IntervalError:
            return None  # changed while it ran to no interval: a plain success
        now = tx.db_now()
        base = job.run_at or now
        run_at = cronlib.next_reoccurrence(base, every, now)
        values = {**params, "run_at": tx.ts(run_at), "now": tx.ts(now)}
        return bool(tx.execute(self.reoccurred, values).rowcount == 1)

    def also(self, tx: Tx, job: Job, outcome: Outcome, written: bool) -> None:
        pass

