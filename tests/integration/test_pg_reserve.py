"""PostgreSQL's one-round-trip reserve (reserve/pg_one_trip.py): a job Psych wrote is
deleted-after-success, found, claimed and read in one statement; a `.delay` job is parsed
before it is claimed; rows that only resemble ours are never written to."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Registry, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.reserve import mark
from dj_consumer.ruby_yaml import dump_handler
from tests.conftest import DB, make_db
from tests.integration.test_protocol import obj


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[DB]:
    yield from make_db("postgresql", tmp_path)


def delay_handler() -> str:
    """`user.delay.send_welcome` as Rails writes it: no sure beginning, parsed before claimed."""
    from tests.unit.conftest_yaml import fixtures

    return next(f for f in fixtures() if f.slug == "pm_ar_instance").handler


def welcome_worker(pg: DB) -> Any:
    """A worker whose only name is `User#send_welcome` (the rows of delay_handler)."""
    reg = Registry()
    reg.run("User#send_welcome")(lambda j: None)
    return make_worker(pg.config(), reg)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every statement psycopg executes from this thread (work_off's), by its first word."""
    import threading

    import psycopg

    seen: Counter[str] = Counter()
    original = psycopg.Cursor.execute
    me = threading.get_ident()

    def counted(self: Any, query: Any, *a: Any, **kw: Any) -> Any:
        if threading.get_ident() == me:
            seen[str(query).split(None, 1)[0].upper()] += 1
        return original(self, query, *a, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(mark, "MARK_MIN_SCAN", float("inf"))  # (see test_mariadb_reserve)
    yield seen


def test_one_round_trip_per_job_for_what_psych_writes(pg: DB, statements: Counter[str]) -> None:
    ran: list[Any] = []
    reg = Registry()
    reg.run("Billing::ChargeJob")(lambda j: ran.append(j.payload))
    w = make_worker(pg.config(), reg)
    assert w.work_off() == (0, 0)
    assert w.store.strategy == "skip_locked"  # auto, once the server is known
    handlers = [dump_handler("Billing::ChargeJob", {"n": 1}, shape="object"),
                dump_handler("Billing::ChargeJob", {"n": 2}, shape="struct"),
                obj("Billing::ChargeJob"),
                dump_handler("Billing::ChargeJob", [3], shape="active_job")]
    pg.insert_many(handlers, run_at=SystemClock().now() - timedelta(minutes=1))
    statements.clear()
    assert w.work_off() == (4, 0)
    sent = dict(statements)
    assert len(ran) == 4 and pg.count() == 0
    # Four reserves that found a job and one that found none, each deleting the success
    # before it: one statement each, nothing else.
    assert sent == {"WITH": 5}


def test_a_delay_job_is_parsed_before_it_is_claimed(pg: DB, statements: Counter[str]) -> None:
    handler = delay_handler()
    w = welcome_worker(pg)
    w.work_off()
    pg.insert(handler)
    statements.clear()
    assert w.work_off() == (1, 0)
    sent = dict(statements)
    assert pg.count() == 0
    assert sent == {"WITH": 2, "UPDATE": 1}


def test_rows_that_only_look_like_ours_are_never_written(pg: DB) -> None:
    """A trigger records every write to the look-alike rows: only the trap (a hand-written
    handler that begins exactly like a Psych object of ours) is claimed and handed back, once."""
    db = pg
    reg = Registry()
    reg.run("Foo")(lambda j: None)
    now = SystemClock().now().replace(microsecond=0)
    lookalikes = [db.insert(obj("FooBar", n=i), run_at=now - timedelta(minutes=10)) for i in range(3)]
    lookalikes.append(db.insert(obj("foo", n=1), run_at=now - timedelta(minutes=40)))
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {db.table}_audit (id bigint, locked_by text)"))
        conn.execute(sa.text(
            f"CREATE FUNCTION {db.table}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.handler NOT LIKE '%ours%' THEN INSERT INTO {db.table}_audit VALUES "
            "(NEW.id, NEW.locked_by); END IF; RETURN NEW; END $$"))
        conn.execute(sa.text(f"CREATE TRIGGER {db.table}_t BEFORE UPDATE ON {db.table} "
                             f"FOR EACH ROW EXECUTE PROCEDURE {db.table}_f()"))
    try:
        w = make_worker(db.config(), reg)
        for round_ in range(3):
            if round_ == 1:
                trap = db.insert("--- !ruby/object:Foo\n...\n", run_at=now - timedelta(minutes=60))
            ours = db.insert(obj("Foo", n="ours"))
            assert w.work_off() == (1, 0)
            assert db.row(ours) is None
        for job_id in [*lookalikes, trap]:
            row = db.row(job_id)
            assert (row.locked_by, row.locked_at, row.attempts, row.failed_at) == (None, None, 0, None)
        with db.engine.connect() as conn:
            audit = conn.execute(sa.text(f"SELECT id, locked_by FROM {db.table}_audit")).all()
        assert [(r.id, r.locked_by is None) for r in audit] == [(trap, False), (trap, True)]
    finally:
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {db.table}_audit"))
            conn.execute(sa.text(f"DROP TRIGGER {db.table}_t ON {db.table}"))
            conn.execute(sa.text(f"DROP FUNCTION {db.table}_f()"))


def test_a_parser_bug_after_a_sure_claim_leaves_the_row_unlocked(
        pg: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    import dj_consumer.slots as slots_module

    reg = Registry()
    reg.run("Foo")(lambda j: None)
    w = make_worker(pg.config(), reg)
    w.work_off()
    job_id = pg.insert(obj("Foo", n=1))

    def parser_bug(handler: str, config: Any) -> Any:
        raise RecursionError("a bug of ours")

    monkeypatch.setattr(slots_module, "_parse", parser_bug)
    with pytest.raises(RecursionError):
        w.work_off()
    row = pg.row(job_id)
    assert (row.locked_by, row.locked_at, row.attempts) == (None, None, 0)
    monkeypatch.undo()
    assert w.work_off() == (1, 0)


def test_the_constants_travel_in_the_statement_text_escaped(
        pg: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """The names, queues and lease patterns are written into the reserve's SQL once, as
    literals, not bound on every call: a queue with a quote, a backslash and a percent sign
    selects exactly its own rows, and the statement's binds are only the per-call values."""
    import psycopg

    sent: list[tuple[str, Any]] = []
    original = psycopg.Cursor.execute

    def seen(self: Any, query: Any, params: Any = None, *a: Any, **kw: Any) -> Any:
        sent.append((str(query), params))
        return original(self, query, params, *a, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", seen)
    odd = "it's \\ 50%_off"
    ran: list[Any] = []
    reg = Registry()
    reg.run("Foo")(lambda j: ran.append(j.payload["n"]))
    w = make_worker(pg.config(queues=[odd]), reg)
    w.work_off()
    pg.insert(obj("Foo", n=1), queue=odd)
    other = pg.insert(obj("Foo", n=2), queue="it's \\ 50%Xoff")
    sent.clear()
    assert w.work_off() == (1, 0)
    assert ran == [1] and pg.row(other) is not None
    reserves = [(q, p) for q, p in sent if q.startswith("WITH")]
    assert reserves
    for query, _params in reserves:
        binds = set(re.findall(r"%\((\w+)\)s", query))
        # the backlog mark (mark_p, mark_run_at) moves between calls: a per-call value too
        assert binds <= {"id", "me", "now", "stale", "claim_sure", "locked_at",
                         "mark_p", "mark_run_at"}, binds
        assert "it''s" in query  # the queue, as a literal


def test_one_cursor_per_connection_for_the_hot_path(pg: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reserve's statement runs on a cursor kept with its connection, not a new one per
    job (its adapters and type caches cost more CPU than the rest of the call)."""
    import psycopg

    made: list[int] = []
    original = psycopg.Connection.cursor

    def counted(self: Any, *a: Any, **kw: Any) -> Any:
        made.append(1)
        return original(self, *a, **kw)

    reg = Registry()
    reg.run("Foo")(lambda j: None)
    w = make_worker(pg.config(), reg)
    w.work_off()
    pg.insert_many([obj("Foo", n=i) for i in range(5)])
    monkeypatch.setattr(psycopg.Connection, "cursor", counted)
    assert w.work_off() == (5, 0)
    assert made == []


def test_a_delay_jobs_claim_sends_no_constants_either(
        pg: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `.delay` row is parsed first and claimed by a second statement: that one too carries
    the names and leases as literals, and still claims only a row that is ready."""
    import psycopg

    sent: list[str] = []
    original = psycopg.Cursor.execute

    def seen(self: Any, query: Any, *a: Any, **kw: Any) -> Any:
        sent.append(str(query))
        return original(self, query, *a, **kw)

    handler = delay_handler()
    w = welcome_worker(pg)
    w.work_off()
    pg.insert(handler)
    monkeypatch.setattr(psycopg.Cursor, "execute", seen)
    assert w.work_off() == (1, 0)
    claims = [q for q in sent if q.startswith("UPDATE")]
    assert len(claims) == 1 and pg.count() == 0
    assert set(re.findall(r"%\((\w+)\)s", claims[0])) <= {
        "id", "me", "now", "stale", "attempts", "locked_at"}, claims[0]


def test_the_reserve_walks_the_index_behind_a_backlog_of_delay_jobs(
        pg: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 ready `.delay` rows (their names are LIKE-prefiltered, never sure): the reserve
    must walk the (priority, run_at) index and stop at the first row, not read and sort every
    ready row (PostgreSQL guessed almost no row passes the LIKEs: 9 ms per reserve here,
    linear in the backlog, where the walk takes 0.15 ms)."""
    import psycopg

    handler = delay_handler()
    pg.insert_many([handler] * 3000, run_at=SystemClock().now() - timedelta(minutes=1))
    with pg.engine.begin() as conn:
        conn.execute(sa.text(f"ANALYZE {pg.table}"))
    sent: list[tuple[str, Any]] = []
    original = psycopg.Cursor.execute

    def seen(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if str(query).lstrip().startswith("WITH"):
            sent.append((str(query), params))
        return original(self, query, params, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", seen)
    w = welcome_worker(pg)
    assert w.work_off(3) == (3, 0)
    query, params = sent[-1]
    monkeypatch.setattr(psycopg.Cursor, "execute", original)
    with psycopg.connect(pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("SET enable_seqscan TO off")  # as the worker's sessions (engine.py)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
        conn.rollback()
    assert "Sort" not in plan and "Bitmap" not in plan, plan
    assert re.search(rf"Index Scan using {pg.table}_priority on {pg.table}", plan), plan
