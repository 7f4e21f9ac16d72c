"""pytest fixtures for testing handlers (opt in: `pytest_plugins = ["dj_consumer.pytest_plugin"]`
in your conftest.py). docs/handlers.md "Testing" shows them in use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dj_consumer.registry import Registry
from dj_consumer.testing import JobTable


@pytest.fixture
def dj_registry() -> Registry:
    """A fresh Registry for handlers registered inside one test (the module-level
    `dj_consumer.job` keeps what your modules register at import)."""
    return Registry()


@pytest.fixture
def dj_table(tmp_path: Path) -> Iterator[JobTable]:
    """A temporary SQLite delayed_jobs table whose worker runs the handlers registered on
    `dj_consumer.job`: `dj_table.enqueue(...)`, `dj_table.work_off()`, `dj_table.rows()`.
    For another registry or settings, build `JobTable(tmp_path, registry=..., config=...)`."""
    table = JobTable(tmp_path)
    try:
        yield table
    finally:
        table.close()
