"""Fixtures for the interop suite: one fresh delayed_jobs table per test, made by Ruby.

The table comes from delayed_job_active_record's own migration template (harness.rb
`schema`), so every column type is what a Rails app has. A test skips when Ruby or the
server is missing, and fails instead when CI=true (tests.conftest.unavailable).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DB, server_url, unavailable
from tests.interop.helpers import Ruby, Runs, ruby_missing, stop_all


@dataclass
class Interop:
    """A shared table: `db` (SQLAlchemy), `ruby` (the Rails side), `runs` (who ran what)."""

    backend: str
    db: DB
    ruby: Ruby
    runs: Runs
    tmp_path: Path

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def table(self) -> str:
        return self.db.table


def require_ruby() -> None:
    reason = ruby_missing()
    if reason:
        unavailable(reason)


def make_interop(backend: str, tmp_path: Path, url: str | None = None) -> Iterator[Interop]:
    """A fresh delayed_jobs table made by Ruby's own migration, on the shared server (or `url`)."""
    url = url or server_url(backend, tmp_path)
    require_ruby()
    table = f"dj_interop_{uuid.uuid4().hex[:10]}"
    ruby = Ruby(url, table)
    ruby.schema()
    engine = sa.create_engine(url)
    runs = Runs(url, table)
    try:
        yield Interop(backend, DB(backend, url, table, engine), ruby, runs, tmp_path)
    finally:
        # Dropped from here, not by a Ruby process (one Ruby start per test saved).
        runs.t.drop(engine, checkfirst=True)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        runs.dispose()
        engine.dispose()


@pytest.fixture(params=["mariadb", "postgresql"])
def interop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Interop]:
    yield from make_interop(request.param, tmp_path)


@pytest.fixture
def interop_mariadb(tmp_path: Path) -> Iterator[Interop]:
    yield from make_interop("mariadb", tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; whatever is still running is stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_all(started)
