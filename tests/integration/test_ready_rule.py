"""The ready rule exists once: `dj-consumer why` reports no reason for a row exactly when
a worker's reserve would take it (the ready SQL selects it and its handler is one of ours).

Hypothesis draws tables of rows around the rule's edges (run_at now, a lock exactly at the
horizon, a lease just expired, a queue or priority just outside the config) and compares the
two answers row by row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dj_consumer import Registry, ruby_yaml
from dj_consumer.config import Config
from dj_consumer.diagnose import why
from dj_consumer.models import JobRow
from dj_consumer.store import Store
from tests.conftest import DB
from tests.integration.test_protocol import obj

#: The worker's clock; whole seconds, as every database keeps them.
NOW = datetime(2026, 1, 1, 12, 0, 0)
MAX_RUN_TIME = 3600.0
LOCK_TIMEOUT = 300.0
ME = "me host:here pid:1"  # the worker asking: it holds none of the drawn rows


def _edges(*centres: float) -> list[float]:
    return sorted({c + d for c in centres for d in (-1.0, 0.0, 1.0)})


#: Seconds from NOW: around now, the lease and the horizon.
OFFSETS = [*_edges(0.0, -LOCK_TIMEOUT, -MAX_RUN_TIME), -86400.0, 86400.0]
HANDLERS = [obj("PyJob"), obj("PyJobber"), obj("RubyOnly"), obj("Other::PyJob")]
LOCKERS = ["py host:h pid:2", "py:3 host:h pid:2", "py.4 host:h pid:2", "py.4:1 host:h pid:2",
           "PY host:h pid:2", "pyx host:h pid:2", "delayed_job host:h pid:9", "host:h pid:9 py"]

row_spec = st.fixed_dictionaries({
    "handler": st.sampled_from(HANDLERS),
    "priority": st.sampled_from([-1, 0, 1, 5, 6]),
    "queue": st.sampled_from([None, "py", "ruby", "PY"]),
    "run_at": st.sampled_from([None, *OFFSETS]),
    "locked_at": st.sampled_from([None, *OFFSETS]),
    "locked_by": st.sampled_from([None, *LOCKERS]),
    "failed": st.booleans(),
})

#: Leases off (lock_timeout = max_run_time): every lock lasts Rails' horizon; or on.
CONFIGS = {
    "horizon": {"lock_timeout": MAX_RUN_TIME},
    "filters": {"lock_timeout": MAX_RUN_TIME, "queues": ("py", None), "min_priority": 0,
                "max_priority": 5},
    "leases": {"lease_worker_ids": ("py",), "lock_timeout": LOCK_TIMEOUT},
}


def _registry() -> Registry:
    reg = Registry()
    reg.run("PyJob")(lambda job: None)
    return reg


@pytest.fixture(params=sorted(CONFIGS))
def ready(request: pytest.FixtureRequest, db: DB) -> Iterator[tuple[DB, Config, Store]]:
    overrides: dict[str, Any] = dict(CONFIGS[request.param], max_run_time=MAX_RUN_TIME,
                                     worker_id="py")
    if request.param == "leases" and db.backend != "sqlite":
        # On a server the lease is aged by the database's own clock, not NOW.
        pytest.skip("leases are aged by the server's clock: drawn on SQLite only")
    config = Config.from_mapping(db.config(**overrides))
    store = Store(config)
    store.check()
    names = _registry().names()
    store.set_name_filters([p for n in names for p in ruby_yaml.like_patterns(n)], names)
    yield db, config, store
    store.close()


def _selected(store: Store) -> set[int]:
    """The ids the ready SQL selects at NOW (the scan a reserve falls back to: no LIMIT cut)."""
    params = dict(store.sql.ready_params(ME, NOW, store.ts), limit=1000)
    with store.engine.connect() as conn:
        return {int(r.id) for r in conn.execute(store.sql.plain.scan, params)}


def _at(offset: float | None) -> datetime | None:
    return None if offset is None else NOW + timedelta(seconds=offset)


def _ours(row: JobRow, registry: Registry) -> bool:
    """What a slot's accept says: the handler parses to a name we run."""
    return registry.spec(ruby_yaml.load(row.handler).name) is not None


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(row_spec, min_size=1, max_size=8))
def test_why_finds_no_reason_exactly_when_a_reserve_takes_the_row(
        ready: tuple[DB, Config, Store], specs: list[dict[str, Any]]) -> None:
    db, config, store = ready
    registry = _registry()
    with db.engine.begin() as conn:
        conn.execute(sa.delete(db.t))
        conn.execute(sa.insert(db.t), [{
            "handler": s["handler"], "priority": s["priority"], "attempts": 0,
            "queue": s["queue"], "run_at": _at(s["run_at"]), "locked_at": _at(s["locked_at"]),
            "locked_by": s["locked_by"], "failed_at": NOW if s["failed"] else None,
            "created_at": NOW, "updated_at": NOW} for s in specs])
    selected = _selected(store)
    for r in db.rows():
        row = JobRow(id=r.id, priority=r.priority, attempts=r.attempts, handler=r.handler,
                     run_at=r.run_at, queue=r.queue, locked_at=r.locked_at,
                     locked_by=r.locked_by, failed_at=r.failed_at)
        reasons = why(row, row.id, config, registry, NOW)
        taken = row.id in selected and _ours(row, registry)
        assert (not reasons) == taken, (
            f"why says {reasons or 'ready'} but a reserve {'takes' if taken else 'skips'} "
            f"{row}")
