"""Issue 12, items 2 and 5: rows that only look like ours never hide, delay or lock anything.

A reserve reads past the rows it rejects (look-alikes: `welcome_back` for `welcome`,
`ImportJob` for `Import`, any row at all for a core-class name with no prefilter) until it
finds one of ours or the ready rows end; a row it rejected is not parsed again on the next
poll; no rejected row stays locked while the next one is parsed. Every reserve strategy, with
and without reserve_batch, on every database it runs on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dj_consumer.slots as worker_module
from dj_consumer import Registry, make_worker
from dj_consumer.clock import SystemClock
from tests.conftest import DB, make_db
from tests.integration.test_protocol import obj


def mailer(method: str, n: int = 0) -> str:
    """A PerformableMailer row, as `UserMailer.delay.<method>(n)` writes it."""
    return ("--- !ruby/object:Delayed::PerformableMailer\n"
            "object: !ruby/class 'UserMailer'\n"
            f"method_name: :{method}\nargs:\n- {n}\n")


@dataclass(frozen=True)
class Strategy:
    backend: str
    label: str
    config: dict[str, Any] = field(default_factory=dict)
    # "unscripted": MariaDB without the one-round-trip script; "as_mysql": the script's MySQL form
    patch: str | None = None


STRATEGIES = [
    Strategy("sqlite", "default_sql"),
    Strategy("mariadb", "auto"),
    Strategy("mariadb", "as_mysql", patch="as_mysql"),
    Strategy("mariadb", "skip_locked_unscripted", {"reserve_sql": "skip_locked"}, "unscripted"),
    Strategy("mariadb", "default_sql", {"reserve_sql": "default_sql"}),
    Strategy("mariadb", "update_limit", {"reserve_sql": "update_limit"}),
    Strategy("postgresql", "auto"),
    Strategy("postgresql", "skip_locked", {"reserve_sql": "skip_locked"}),
    Strategy("postgresql", "default_sql", {"reserve_sql": "default_sql"}),
    Strategy("postgresql", "update_returning", {"reserve_sql": "update_returning"}),
]


def _apply(strategy: Strategy, monkeypatch: pytest.MonkeyPatch) -> None:
    from dj_consumer.db import Connections, ServerInfo

    if strategy.patch == "as_mysql":
        monkeypatch.setattr(ServerInfo, "mariadb", property(lambda self: False))
    if strategy.patch == "unscripted":
        monkeypatch.setattr(Connections, "scripts", property(lambda self: False))


@pytest.fixture(params=STRATEGIES, ids=lambda s: f"{s.backend}-{s.label}")
def sdb(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DB, Strategy]]:
    strategy: Strategy = request.param
    _apply(strategy, monkeypatch)
    for db in make_db(strategy.backend, tmp_path):
        yield db, strategy


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every handler the worker parses, in order."""
    seen: list[str] = []
    real = worker_module._parse

    def counting(handler: str, *rest: Any) -> Any:
        seen.append(handler)
        return real(handler, *rest)

    monkeypatch.setattr(worker_module, "_parse", counting)
    return seen


def _an_hour_ago() -> Any:
    return SystemClock().now().replace(microsecond=0) - timedelta(hours=1)


def _untouched(db: DB, ids: list[int]) -> None:
    with db.engine.connect() as conn:
        t = db.t
        touched = conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.id.in_(ids), sa.or_(t.c.locked_by.is_not(None), t.c.locked_at.is_not(None),
                                    t.c.attempts != 0, t.c.failed_at.is_not(None)))).scalar_one()
    assert touched == 0


@pytest.mark.parametrize("batch", [1, 16])
def test_our_job_behind_260_lookalikes_runs(sdb: tuple[DB, Strategy], batch: int,
                                            parses: list[str]) -> None:
    """260 `UserMailer.welcome_back` rows ahead of one `UserMailer.welcome`: it runs, the
    look-alikes are left as they were, and the next poll parses none of them again."""
    db, strategy = sdb
    reg = Registry()
    ran: list[int] = []
    reg.run("UserMailer.welcome")(lambda j: ran.append(j.payload["args"][0]))
    db.insert_many([mailer("welcome_back", i) for i in range(260)], run_at=_an_hour_ago())
    lookalikes = [r.id for r in db.rows()]
    db.insert(mailer("welcome", 1))
    w = make_worker(db.config(reserve_batch=batch, **strategy.config), reg)
    assert w.work_off(5) == (1, 0)
    assert ran == [1]
    _untouched(db, lookalikes)
    parses.clear()
    db.insert(mailer("welcome", 2))
    assert w.work_off(5) == (1, 0)
    assert ran == [1, 2]
    # Only the new row is parsed: the look-alikes were recognised without parsing them.
    assert len(parses) <= 2, f"{len(parses)} handlers parsed again on the next poll"
    assert w.work_off(5) == (0, 0)
    _untouched(db, lookalikes)
    w.close()


TRIGGERS = {
    # a method name inside another method name
    "method_in_method": (["UserMailer.welcome"], lambda i: mailer("welcome_back", i),
                         lambda: mailer("welcome", 7)),
    # a class name that prefixes a Ruby class
    "class_prefix": (["Import"], lambda i: obj("ImportJob", n=i), lambda: obj("Import", n=7)),
    # a core-class name has no prefilter: every row in the table is a candidate
    "builtin_no_prefilter": (["Hash", "PyJob"], lambda i: obj("RubyOnlyJob", n=i),
                             lambda: obj("PyJob", n=7)),
}


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_realistic_lookalikes_never_hide_a_ready_job(db: DB, trigger: str) -> None:
    names, lookalike, ours = TRIGGERS[trigger]
    reg = Registry()
    ran: list[str] = []
    for name in names:
        reg.run(name)(lambda j: ran.append(j.name))
    db.insert_many([lookalike(i) for i in range(300)], run_at=_an_hour_ago())
    lookalikes = [r.id for r in db.rows()]
    db.insert(ours())
    w = make_worker(db.config(), reg)
    assert w.work_off(5) == (1, 0)
    assert ran == [names[-1]]
    _untouched(db, lookalikes)
    w.close()


def test_a_batch_claim_is_fenced_by_attempts(db: DB) -> None:
    """default_sql's batch claim (on PostgreSQL one statement for every row) takes a row only
    at the attempts it read: a row another worker ran and rescheduled meanwhile is not run
    with the old count."""
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(db.config(reserve_sql="default_sql"), reg)
    w.work_off()
    job_id = db.insert(obj("J"))
    store = w.store
    now = SystemClock().now()

    def accept_while_someone_reruns_it(row: Any) -> bool:
        # Between our read and our claim, another worker ran the job, it failed, and its
        # reschedule_at put it straight back: attempts 1, ready, unlocked.
        db.update(job_id, attempts=1, run_at=now - timedelta(seconds=1))
        return True

    rows = store.reserve_many("pytest host:h pid:1", now, accept_while_someone_reruns_it, 4)
    for row in rows:
        assert row.attempts == db.row(row.id).attempts, "claimed with a stale attempts count"
    w.close()


# -- item 5: no rejected row stays locked while we parse the next one --------------------------

RUBY_UPDATE = {
    # Ruby's optimized_sql reserve of a worker serving every queue (so it wants the rows we
    # are parsing), with a short lock wait so a regression fails instead of hanging.
    "mariadb": ("UPDATE {t} SET locked_at = :now, locked_by = 'rb host:x pid:1' WHERE "
                "((run_at <= :now AND (locked_at IS NULL OR locked_at < :stale)) "
                "OR locked_by = 'rb host:x pid:1') AND failed_at IS NULL "
                "ORDER BY priority ASC, run_at ASC LIMIT 1"),
    "postgresql": ("UPDATE {t} SET locked_at = :now, locked_by = 'rb host:x pid:1' WHERE id IN "
                   "(SELECT id FROM {t} WHERE ((run_at <= :now AND (locked_at IS NULL OR "
                   "locked_at < :stale)) OR locked_by = 'rb host:x pid:1') AND failed_at IS NULL "
                   "ORDER BY priority ASC, run_at ASC LIMIT 1 FOR UPDATE) RETURNING id"),
}
SERVER_STRATEGIES = [s for s in STRATEGIES if s.backend != "sqlite"]


@pytest.fixture(params=SERVER_STRATEGIES, ids=lambda s: f"{s.backend}-{s.label}")
def server_sdb(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DB, Strategy]]:
    strategy: Strategy = request.param
    _apply(strategy, monkeypatch)
    for db in make_db(strategy.backend, tmp_path):
        yield db, strategy


@pytest.mark.parametrize("batch", [1, 16])
def test_a_ruby_reserve_never_waits_behind_rows_we_rejected(
        server_sdb: tuple[DB, Strategy], batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing takes 25 ms a row; 60 look-alikes are ahead of our job. A Ruby worker's
    reserve sent while we scan them must not wait for the scan to end."""
    db, strategy = server_sdb
    real = worker_module._parse
    parsed = threading.Event()
    started: list[float] = []

    def slow(handler: str, *rest: Any) -> Any:
        if len(started) == 3:
            parsed.set()  # a few rows in: the scan is under way
        started.append(time.monotonic())
        time.sleep(0.025)
        return real(handler, *rest)

    monkeypatch.setattr(worker_module, "_parse", slow)
    reg = Registry()
    reg.run("UserMailer.welcome")(lambda j: None)
    db.insert_many([mailer("welcome_back", i) for i in range(60)], run_at=_an_hour_ago())
    db.insert(mailer("welcome", 1))
    short = ({"init_command": "SET SESSION innodb_lock_wait_timeout=5"}
             if db.backend == "mariadb" else {"options": "-c lock_timeout=5000"})
    ruby = sa.create_engine(sa.engine.make_url(db.url).update_query_dict(short),
                            isolation_level="AUTOCOMMIT")
    reserve = sa.text(RUBY_UPDATE[db.backend].format(t=db.table))
    w = make_worker(db.config(reserve_batch=batch, **strategy.config), reg)
    waited: list[float] = []

    def ruby_reserve() -> None:
        assert parsed.wait(30)
        now = SystemClock().now()
        with ruby.connect() as conn:
            t0 = time.perf_counter()
            conn.execute(reserve, {"now": now, "stale": now - timedelta(hours=4)})
            waited.append(time.perf_counter() - t0)

    thread = threading.Thread(target=ruby_reserve)
    thread.start()
    try:
        assert w.work_off(16) == (1, 0)
    finally:
        thread.join(60)
        w.close()
        ruby.dispose()
    assert len(started) >= 10, "the scan was too short to show anything"
    # One parse (25 ms) at most, plus a loaded machine's slack; the whole scan is ~1.5 s.
    assert waited and waited[0] < 0.4, f"Ruby's reserve waited {waited[0]:.2f}s behind our scan"
