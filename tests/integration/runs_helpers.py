"""Run-record tables next to a test's delayed_jobs table, and Job values to start runs with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from dj_consumer.models import Job
from dj_consumer.runs import schema
from dj_consumer.runs.store import RunsStore, detect
from tests.conftest import DB


@dataclass
class RunsDB:
    db: DB
    runs: str
    batches: str
    store: RunsStore

    @property
    def engine(self) -> sa.Engine:
        return self.db.engine

    def config(self, **more: Any) -> dict[str, Any]:
        return self.db.config(runs_table=self.runs, batches_table=self.batches, **more)

    def record(self, job_id: int) -> Any:
        with self.engine.connect() as conn:
            return self.store.get(conn, job_id)

    def set(self, job_id: int, **cols: Any) -> None:
        t = schema.runs_table(self.runs)
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.job_id == job_id).values(**cols))


@contextmanager
def runs_tables(db: DB) -> Iterator[RunsDB]:
    runs, batches = f"{db.table}_jr", f"{db.table}_jb"
    schema.create(db.engine, runs, batches)
    try:
        store = detect(db.engine, runs_table=runs, table_name=db.table, batches_table=batches)
        assert store is not None
        yield RunsDB(db, runs, batches, store)
    finally:
        for table in reversed(schema.tables(runs, batches)):
            table.drop(db.engine, checkfirst=True)


def job(job_id: int, payload: Any = None, *, name: str = "ReportJob", attempts: int = 0,
        locked_by: str = "py host:h pid:1", queue: str | None = "reports",
        max_attempts: int = 25) -> Job:
    return Job(id=job_id, name=name, display_name=name, payload=payload or {}, attempts=attempts,
               max_attempts=max_attempts, queue=queue, priority=0, run_at=None,
               locked_by=locked_by, handler="--- !ruby/object:" + name + "\n",
               log=structlog.get_logger("test").bind(job_id=job_id))
