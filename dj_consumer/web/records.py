"""What the dashboard reads beside the delayed_jobs rows: a job's run record (the runs table,
docs/runs.md "Job runs") and the recurring schedules (the cron / reoccur_in columns,
docs/recurring.md). Either may be missing; which exist is looked up at start and, while one is
missing, again at most every RECHECK seconds, so a table or column added later shows up without
a restart. A job's record and its schedule are one primary-key read each; the list of every
schedule needs a pass over the table (no index covers `cron`), so the status thread takes it
(snapshot.py), never a page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from dj_consumer.runs.records import Run
from dj_consumer.runs.store import RunsStore, detect
from dj_consumer.scheduling import ScheduleRow, schedule_of, schedules, table_columns
from dj_consumer.store import Store

log = structlog.get_logger(__name__)

#: Seconds between two looks for a runs table or recurring columns that were missing.
RECHECK = 30.0
RECURRING = ({"cron"}, {"reoccur_in", "last_run_at"})


class Records:
    """The runs table and the recurring columns of one dashboard's database."""

    def __init__(self, store: Store, cfg: Config,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.cfg, self._monotonic = store, cfg, monotonic
        self._lock = threading.Lock()
        self._runs: RunsStore | None = None
        self._columns: set[str] = set()
        self._looked = float("-inf")
        self.problem: str | None = None  # a runs table we cannot read, in one line

    # -- what exists ------------------------------------------------------------------------

    def _look(self) -> None:
        with self._lock:
            complete = self._runs is not None and self.recurring
            if complete or self._monotonic() - self._looked < RECHECK:
                return
            self._looked = self._monotonic()
            self._columns = table_columns(self.store)
            try:
                self._runs = detect(self.store.engine, runs_table=self.cfg.runs_table,
                                    table_name=self.cfg.table_name,
                                    batches_table=self.cfg.batches_table)
                self.problem = None
            except ConfigError as exc:  # a runs table of another shape: say so, show the rest
                self._runs, self.problem = None, str(exc)
                log.warning("web.runs_table_unreadable", error=self.problem)

    @property
    def recurring(self) -> bool:
        """Does the table have the cron column or reoccur_in + last_run_at?"""
        return any(cols <= self._columns for cols in RECURRING)

    def has_runs(self) -> bool:
        self._look()
        return self._runs is not None

    def has_recurring(self) -> bool:
        self._look()
        return self.recurring

    # -- reads ------------------------------------------------------------------------------

    def run(self, job_id: int) -> Run | None:
        """Job `job_id`'s run record, or None (no record, or no runs table)."""
        self._look()
        runs = self._runs
        if runs is None:
            return None
        with self.store.engine.connect() as conn:
            return runs.get(conn, job_id)

    def schedule(self, job_id: int) -> ScheduleRow | None:
        """Row `job_id`'s schedule, or None (not a recurring row, or no recurring columns)."""
        self._look()
        return schedule_of(self.store, job_id, self._columns) if self.recurring else None

    def schedules(self) -> list[ScheduleRow] | None:
        """Every recurring row (a pass over the table: the status thread's work), or None when
        the table has no recurring columns."""
        self._look()
        return schedules(self.cfg, store=self.store) if self.recurring else None
