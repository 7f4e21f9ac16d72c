"""The bare row protocol: the least a worker can do per job, written straight on the driver.

Lock one ready row the way delayed_job_active_record does on that database, read it, delete
it, autocommit. No handler parsing, no name filter, no logging: the ceiling for one worker.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

READY = (
    "((run_at <= {p} AND (locked_at IS NULL OR locked_at < {p})) OR locked_by = {p}) "
    "AND failed_at IS NULL"
)
ORDER = "ORDER BY priority ASC, run_at ASC"
MAX_RUN_TIME = timedelta(hours=4)


def _me() -> str:
    return f"bare host:{socket.gethostname()} pid:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run(url: str, table: str, jobs: int) -> tuple[int, float]:
    """Work off up to `jobs` rows; (jobs done, seconds)."""
    backend = sa.engine.make_url(url).get_backend_name()
    loop = {"mysql": _mysql, "mariadb": _mysql, "postgresql": _postgresql, "sqlite": _sqlite}[backend]
    return loop(sa.engine.make_url(url), table, jobs)


def _mysql(url: sa.URL, table: str, jobs: int) -> tuple[int, float]:
    import pymysql

    conn = pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                           password=url.password or "", database=url.database, autocommit=True)
    me = _me()
    ready = READY.format(p="%s")
    # Ruby's reserve_with_scope_using_optimized_sql for MySQL: UPDATE … LIMIT 1, read back.
    lock = f"UPDATE {table} SET locked_at = %s, locked_by = %s WHERE {ready} {ORDER} LIMIT 1"
    read = f"SELECT * FROM {table} WHERE locked_at = %s AND locked_by = %s AND failed_at IS NULL LIMIT 1"
    delete = f"DELETE FROM {table} WHERE id = %s"
    done = 0
    started = time.perf_counter()
    with conn.cursor() as cur:
        while done < jobs:
            now = _now().replace(microsecond=0)
            if cur.execute(lock, (now, me, now, now - MAX_RUN_TIME, me)) == 0:
                break
            cur.execute(read, (now, me))
            row: Any = cur.fetchone()
            cur.execute(delete, (row[0],))
            done += 1
    seconds = time.perf_counter() - started
    conn.close()
    return done, seconds


def _postgresql(url: sa.URL, table: str, jobs: int) -> tuple[int, float]:
    import psycopg

    conn = psycopg.connect(host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username,
                           password=url.password, dbname=url.database, autocommit=True)
    me = _me()
    ready = READY.format(p="%s")
    # Ruby's PostgreSQL strategy, with SKIP LOCKED as dj_consumer uses it.
    lock = (f"UPDATE {table} SET locked_at = %s, locked_by = %s WHERE id IN (SELECT id FROM {table} "
            f"WHERE {ready} {ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *")
    delete = f"DELETE FROM {table} WHERE id = %s"
    done = 0
    started = time.perf_counter()
    with conn.cursor() as cur:
        while done < jobs:
            now = _now()
            cur.execute(lock, (now, me, now, now - MAX_RUN_TIME, me), prepare=True)
            row = cur.fetchone()
            if row is None:
                break
            cur.execute(delete, (row[0],), prepare=True)
            done += 1
    seconds = time.perf_counter() - started
    conn.close()
    return done, seconds


def _sqlite(url: sa.URL, table: str, jobs: int) -> tuple[int, float]:
    import sqlite3

    conn = sqlite3.connect(url.database or "", isolation_level=None, timeout=30)
    me = _me()
    ready = READY.format(p="?")
    # Rails' default_sql strategy (SQLite has no UPDATE … LIMIT): read candidates, lock one
    # with an UPDATE that re-checks it is still ready.
    candidates = f"SELECT id FROM {table} WHERE {ready} {ORDER} LIMIT 5"
    claim = f"UPDATE {table} SET locked_at = ?, locked_by = ? WHERE id = ? AND {ready}"
    read = f"SELECT * FROM {table} WHERE id = ?"
    delete = f"DELETE FROM {table} WHERE id = ?"
    done = 0
    started = time.perf_counter()
    while done < jobs:
        now = _fmt(_now())
        stale = _fmt(_now() - MAX_RUN_TIME)
        got = None
        for (job_id,) in conn.execute(candidates, (now, stale, me)).fetchall():
            if conn.execute(claim, (now, me, job_id, now, stale, me)).rowcount == 1:
                got = conn.execute(read, (job_id,)).fetchone()
                break
        if got is None:
            break
        conn.execute(delete, (got[0],))
        done += 1
    seconds = time.perf_counter() - started
    conn.close()
    return done, seconds


def _fmt(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text, which is what the rows hold."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
