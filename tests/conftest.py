"""Real databases for the tests: SQLite always, MariaDB and PostgreSQL when reachable.

A server-backed test skips with the reason on a laptop without the server, and fails when
CI=true, so CI can never go green by skipping.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import schema

MARIADB_URL = os.environ.get("DJ_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get("DJ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", "mariadb", "postgresql"]

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**more: str) -> dict[str, str]:
    """The environment for a dj-consumer subprocess: no DJ_* settings leak in from the
    developer's shell, `more` added, and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_")}
    env.update(more)
    env["PYTHONPATH"] = str(ROOT)
    return env


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing server must never turn CI green."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _close_store_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every worker's and store's connections when its test ends. Most tests never
    call close(); their kept connections would linger until garbage collection, and a
    suite run beside another one exhausts PostgreSQL's max_connections (100)."""
    from dj_consumer import db as dbmod

    made: list[Any] = []
    real = dbmod.Connections.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(dbmod.Connections, "__init__", init)
    yield
    for conns in made:
        with contextlib.suppress(Exception):
            conns.close()


_reachable: dict[str, str | None] = {}


def server_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url = MARIADB_URL if backend == "mariadb" else POSTGRES_URL
    if backend not in _reachable:
        try:
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
            _reachable[backend] = None
        except Exception as exc:  # any failure means: not reachable here
            _reachable[backend] = f"{backend} not reachable at {url}: {str(exc).splitlines()[0]}"
    reason = _reachable[backend]
    if reason:
        unavailable(reason)
    return url


@dataclass
class DB:
    backend: str
    url: str
    table: str
    engine: sa.Engine
    _table: sa.Table | None = None

    @property
    def t(self) -> sa.Table:
        if self._table is None:
            self._table = schema.delayed_jobs_table(self.table)
        return self._table

    def config(self, **overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "database_url": self.url,
            "table_name": self.table,
            "sleep_delay": 0.05,
            "worker_id": "pytest",
        }
        cfg.update(overrides)
        return cfg

    def insert(self, handler: str, **cols: Any) -> int:
        now = _now()
        values: dict[str, Any] = {
            "handler": handler,
            "priority": 0,
            "attempts": 0,
            "run_at": now,
            "created_at": now,
            "updated_at": now,
        }
        values.update(cols)
        with self.engine.begin() as conn:
            result = conn.execute(sa.insert(self.t).values(**values))
            return int(result.inserted_primary_key[0])

    def insert_many(self, handlers: list[str], **cols: Any) -> None:
        """Rows in one statement (ready now unless run_at is given), for drains and backlogs."""
        now = _now()
        values = [{"handler": h, "priority": 0, "attempts": 0, "run_at": now, **cols}
                  for h in handlers]
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.t), values)

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(self.t).order_by(self.t.c.id)).all())

    def row(self, job_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.t).where(self.t.c.id == job_id)).first()

    def update(self, job_id: int, **cols: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(self.t).where(self.t.c.id == job_id).values(**cols))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.t)).scalar_one())


def _now() -> datetime:
    from dj_consumer.clock import SystemClock

    return SystemClock().now().replace(microsecond=0)


def make_db(backend: str, tmp_path: Path) -> Iterator[DB]:
    url = server_url(backend, tmp_path)
    table = f"dj_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    schema.create(engine, table)
    try:
        yield DB(backend, url, table, engine)
    finally:
        schema.delayed_jobs_table(table).drop(engine, checkfirst=True)
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DB]:
    yield from make_db(request.param, tmp_path)


@pytest.fixture(params=["mariadb", "postgresql"])
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DB]:
    yield from make_db(request.param, tmp_path)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[DB]:
    yield from make_db("sqlite", tmp_path)


@pytest.fixture
def mariadb_db(tmp_path: Path) -> Iterator[DB]:
    yield from make_db("mariadb", tmp_path)
