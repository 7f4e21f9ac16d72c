"""The schedule's table: its rows as inserted, snapshots of every column, who holds what."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from dj_consumer import schema
from dj_consumer.clock import SystemClock
from tests.model.jobs import handler_yaml
from tests.model.schedule import LOOKALIKES, Schedule


def insert_rows(engine: sa.Engine, table: str,
                 schedule: Schedule) -> tuple[dict[int, str], dict[int, int]]:
    t = schema.delayed_jobs_table(table)
    now = SystemClock().now().replace(microsecond=0)
    kinds: dict[int, str] = {}
    keys: dict[int, int] = {}
    with engine.begin() as conn:
        if schedule.bulk:
            conn.execute(sa.insert(t), [
                {"handler": handler_yaml(LOOKALIKES[i % len(LOOKALIKES)], 100000 + i, "ok"),
                 "priority": -5, "attempts": 0, "run_at": now - timedelta(minutes=10)}
                for i in range(schedule.bulk)])
            ids = conn.execute(sa.select(t.c.id).order_by(t.c.id)).scalars().all()
            kinds.update((int(i), "bulk") for i in ids)
            keys.update((int(i), 100000 + n) for n, i in enumerate(ids))
        for row in schedule.rows:
            values: dict[str, Any] = {
                "handler": handler_yaml(row.name, row.key, row.plan), "priority": row.priority,
                "attempts": 0, "run_at": now - timedelta(seconds=row.key % 60 + 1),
                "created_at": now, "updated_at": now}
            if row.kind == "future":
                values["run_at"] = now + timedelta(hours=1)
            elif row.kind == "failed":
                values.update(failed_at=now - timedelta(hours=1), attempts=3,
                              last_error="old failure")
            inserted = conn.execute(sa.insert(t).values(**values)).inserted_primary_key
            assert inserted is not None
            job_id = inserted[0]
            kinds[int(job_id)] = row.kind
            keys[int(job_id)] = row.key
    return kinds, keys


#: Connections one schedule may open at once (one per worker thread, as the product keeps).
ROOM = 60


def wait_for_room(engine: sa.Engine, backend: str, timeout: float = 120.0) -> None:
    """On a shared server, wait until it has room for a schedule's connections: a worker that
    cannot connect at start says so and stops, which is right, but is not what we test."""
    queries = {
        "postgresql": ("SHOW max_connections",
                       "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"),
        "mariadb": ("SELECT @@max_connections",
                    "SELECT count(*) FROM information_schema.processlist"),
    }
    if backend not in queries:
        return
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            most, used = (int(conn.exec_driver_sql(q).scalar() or 0) for q in queries[backend])
        if most - used >= ROOM or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def snapshot(engine: sa.Engine, table: str) -> dict[int, dict[str, Any]]:
    """Every column of every row, times as naive ISO text."""
    t = schema.delayed_jobs_table(table)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t)).mappings().all()
    return {int(r["id"]): {k: _plain(v) for k, v in r.items()} for r in rows}


def _plain(value: Any) -> Any:
    return value.replace(tzinfo=None).isoformat(sep=" ") if isinstance(value, datetime) else value


def locked_by(engine: sa.Engine, table: str, worker: str) -> list[int]:
    """Rows a worker (any of its slots) holds now."""
    t = schema.delayed_jobs_table(table)
    query = sa.select(t.c.id).where(sa.or_(t.c.locked_by.like(f"{worker} host:%"),
                                           t.c.locked_by.like(f"{worker}:%")))
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(query).scalars()]
