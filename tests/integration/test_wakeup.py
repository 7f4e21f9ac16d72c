"""Pick-up latency (issue 18): an idle worker sleeps until the next run_at, and wakes for a new
row well before sleep_delay; the prober that notices new rows never locks nor writes."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.wakeup import Prober
from dj_consumer.worker import Worker
from tests.conftest import DB

SLEEP_DELAY = 5.0


def stamp_handler(seq: int) -> str:
    return f"--- !ruby/object:StampJob\nseq: {seq}\n"


class Stamps:
    """A registry whose StampJob notes when each job's handler started (wall clock)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.started: dict[int, float] = {}
        self.ran = threading.Event()

        @self.registry.run("StampJob")
        def stamp(j: Job) -> None:
            self.started[int(j.payload["seq"])] = time.time()
            self.ran.set()


@contextmanager
def running(db: DB, stamps: Stamps, **config: Any) -> Iterator[Worker]:
    """A worker in start(), idle after its first reserve; stopped and closed at the end."""
    cfg = db.config(**{"sleep_delay": SLEEP_DELAY, **config})
    worker = make_worker(cfg, stamps.registry)
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        time.sleep(0.5)  # its first reserves found nothing: every slot sleeps now
        yield worker
    finally:
        worker.stop()
        thread.join(15)
        worker.close()
    assert not thread.is_alive()


def whole_seconds_ahead(seconds: int) -> datetime:
    """A run_at `seconds` ahead on a whole second (MySQL's datetime keeps no fractions)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=0) + timedelta(seconds=seconds)


def epoch(naive_utc: datetime) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp()


def test_a_job_scheduled_2s_ahead_starts_on_time_while_sleep_delay_is_5s(db: DB) -> None:
    """No prober, nothing rings: the idle worker's sleep ends at the row's run_at."""
    stamps = Stamps()
    run_at = whole_seconds_ahead(2)
    db.insert(stamp_handler(1), run_at=run_at)
    with running(db, stamps, idle_poll=0):
        assert stamps.ran.wait(SLEEP_DELAY)
    late = stamps.started[1] - epoch(run_at)
    assert 0 <= late < 0.25, f"started {late * 1000:.0f} ms after run_at"


def test_a_row_inserted_while_idle_is_picked_up_well_before_sleep_delay(db: DB) -> None:
    stamps = Stamps()
    with running(db, stamps):
        committed = time.time()
        db.insert(stamp_handler(1), run_at=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
        assert stamps.ran.wait(SLEEP_DELAY)
    assert stamps.started[1] - committed < 1.0


def test_a_scheduled_row_inserted_while_idle_starts_on_its_run_at(db: DB) -> None:
    """The prober rings for it; the slot then sleeps until its run_at, not sleep_delay."""
    stamps = Stamps()
    with running(db, stamps):
        run_at = whole_seconds_ahead(2)
        db.insert(stamp_handler(1), run_at=run_at)
        assert stamps.ran.wait(SLEEP_DELAY)
    late = stamps.started[1] - epoch(run_at)
    assert 0 <= late < 0.25, f"started {late * 1000:.0f} ms after run_at"


def test_without_a_ring_an_idle_worker_waits_for_sleep_delay(sqlite_db: DB) -> None:
    """idle_poll = 0 turns the prober off: a new row waits for the next poll (the safety net)."""
    stamps = Stamps()
    with running(sqlite_db, stamps, idle_poll=0, sleep_delay=2.0):
        committed = time.time()
        sqlite_db.insert(stamp_handler(1))
        assert not stamps.ran.wait(1.0)
        assert stamps.ran.wait(3.0)
    assert stamps.started[1] - committed >= 1.0


def test_rows_we_cannot_run_do_not_ring(db: DB) -> None:
    """Another name, a failed row, a locked row, another queue: added, but none ours."""
    stamps = Stamps()
    worker = make_worker(db.config(queues=["python"]), stamps.registry)
    worker.work_off(0)
    prober = Prober(worker.slots.wakeup, 0.1)
    assert prober.probe()  # the first look rings: rows may have come before it
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    db.insert("--- !ruby/object:RubyOnly {}\n", queue="python")
    db.insert(stamp_handler(1), queue="python", failed_at=now)
    db.insert(stamp_handler(2), queue="python", locked_at=now, locked_by="delayed_job host:x pid:1")
    db.insert(stamp_handler(3), queue="mailers")
    assert not prober.probe()
    db.insert(stamp_handler(4), queue="python", run_at=now + timedelta(hours=1))
    assert prober.probe()  # ours, later: the slots learn its run_at
    assert not prober.probe()  # nothing added since
    worker.close()


LOCK_WAIT = {"mariadb": "SET SESSION innodb_lock_wait_timeout = 1",
             "postgresql": "SET lock_timeout = '1s'"}
READ_ONLY = {"mariadb": "SET SESSION TRANSACTION READ ONLY",
             "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
             "sqlite": "PRAGMA query_only = ON"}


def test_the_prober_never_locks_nor_writes(db: DB) -> None:
    """Probes and the next-run_at query run on a read-only session (a write would fail),
    with a row locked FOR UPDATE by another connection (a locking read would wait for it)."""
    stamps = Stamps()
    worker = make_worker(db.config(), stamps.registry)
    worker.work_off(0)
    wakeup = worker.slots.wakeup
    prober = Prober(wakeup, 0.1)
    locked = db.insert(stamp_handler(1), run_at=whole_seconds_ahead(3))
    with worker.store.db.connection() as conn:  # the connection probes use in this thread
        conn.exec_driver_sql(READ_ONLY[db.backend])
        if db.backend in LOCK_WAIT:
            conn.exec_driver_sql(LOCK_WAIT[db.backend])
    holder = db.engine.connect()
    try:
        if db.backend != "sqlite":  # (SQLite readers never wait for a writer's row lock)
            trx = holder.begin()
            holder.execute(sa.text(f"SELECT id FROM {db.table} WHERE id = :id FOR UPDATE"),
                           {"id": locked})
        prober.probe()
        db.insert(stamp_handler(2))
        started = time.monotonic()
        assert prober.probe()
        now = datetime.now(UTC).replace(tzinfo=None)
        assert wakeup.next_run_at(now, now + timedelta(seconds=10)) is not None
        assert 0 < wakeup.delay() <= 3.1
        assert time.monotonic() - started < 0.9  # no lock was waited for
        if db.backend != "sqlite":
            trx.rollback()
    finally:
        holder.close()
        worker.close()
    assert db.row(locked).locked_by is None and db.count() == 2


def test_an_idle_process_with_many_slots_probes_once_per_idle_poll(sqlite_db: DB) -> None:
    """One prober per process, not per slot: a few cheap statements per second in all."""
    stamps = Stamps()
    counted: list[str] = []
    with running(sqlite_db, stamps, concurrency=4) as worker:
        @sa.event.listens_for(worker.store.engine, "before_cursor_execute")
        def count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
            counted.append(statement)
        time.sleep(2.0)
        sa.event.remove(worker.store.engine, "before_cursor_execute", count)
    per_second = len(counted) / 2.0
    assert per_second <= math.ceil(1 / 0.1) + 2, counted
    assert all("MAX(id)" in s for s in counted), counted


def test_the_next_run_at_is_the_earliest_of_ours_across_priorities(db: DB) -> None:
    stamps = Stamps()
    worker = make_worker(db.config(), stamps.registry)
    worker.work_off(0)
    soon, sooner, soonest = (whole_seconds_ahead(s) for s in (4, 2, 1))
    db.insert(stamp_handler(1), priority=0, run_at=soon)
    db.insert(stamp_handler(2), priority=7, run_at=sooner)
    db.insert("--- !ruby/object:RubyOnly {}\n", priority=3, run_at=soonest)  # not ours
    db.insert(stamp_handler(3), priority=-2, run_at=soonest, failed_at=soonest)  # failed
    now = datetime.now(UTC).replace(tzinfo=None)
    assert worker.slots.wakeup.next_run_at(now, now + timedelta(seconds=10)) == sooner
    assert worker.slots.wakeup.next_run_at(now, sooner - timedelta(microseconds=1)) is None
    worker.close()


def test_an_enqueue_in_the_same_process_wakes_its_idle_slots(sqlite_db: DB) -> None:
    """No prober, no notification: the enqueue rings the local worker directly."""
    from dj_consumer import enqueue

    stamps = Stamps()
    with running(sqlite_db, stamps, idle_poll=0):
        committed = time.time()
        enqueue(sqlite_db.config(), "StampJob", {"seq": 1}, registry=stamps.registry)
        assert stamps.ran.wait(SLEEP_DELAY)
    assert stamps.started[1] - committed < 0.5


def test_an_enqueue_batch_in_the_same_process_wakes_its_idle_slots(sqlite_db: DB) -> None:
    from dj_consumer import runs
    from tests.integration.runs_helpers import runs_tables

    stamps = Stamps()
    started: list[float] = []

    @stamps.registry.run("PartJob")
    def part(j: Job) -> None:
        started.append(time.time())
        stamps.ran.set()

    with runs_tables(sqlite_db) as rdb, running(sqlite_db, stamps, idle_poll=0, **{
            "runs_table": rdb.runs, "batches_table": rdb.batches}):
        committed = time.time()
        runs.enqueue_batch("PartJob", [1], config=rdb.config())
        assert stamps.ran.wait(SLEEP_DELAY)
    assert started[0] - committed < 0.5


def test_a_row_added_right_after_the_last_one_was_deleted_rings(db: DB) -> None:
    """Rails' SQLite tables are AUTOINCREMENT, as ours: a new row never takes the id of the
    row just deleted, so the prober's MAX(id) sees it (the id is not reused)."""
    stamps = Stamps()
    worker = make_worker(db.config(), stamps.registry)
    worker.work_off(0)
    prober = Prober(worker.slots.wakeup, 0.1)
    first = db.insert(stamp_handler(1))
    prober.probe()
    with db.engine.begin() as conn:
        conn.execute(db.t.delete().where(db.t.c.id == first))
    assert db.insert(stamp_handler(2)) > first
    assert prober.probe()
    worker.close()


def without_autoincrement(db: DB) -> None:
    """Make db's SQLite table again as older versions of ours did: `INTEGER PRIMARY KEY`
    without AUTOINCREMENT, so a new row takes max(id) + 1 and reuses a deleted top id."""
    from sqlalchemy.schema import CreateTable

    ddl = str(CreateTable(db.t).compile(db.engine))
    assert "AUTOINCREMENT" in ddl
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {db.table}")
        conn.exec_driver_sql(ddl.replace(" AUTOINCREMENT", ""))


def replace_top(db: DB, top: int, handler: str) -> int:
    """Delete row `top` and insert a row in one transaction (between two probes, say: a Ruby
    worker deletes the newest row it ran, the Rails app inserts a job): its id."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.engine.begin() as conn:
        conn.execute(db.t.delete().where(db.t.c.id == top))
        return int(conn.execute(db.t.insert().values(
            handler=handler, run_at=now, created_at=now, updated_at=now)).inserted_primary_key[0])


def test_sqlite_without_autoincrement_a_row_that_reuses_the_top_id_rings(sqlite_db: DB) -> None:
    """MAX(id) does not move when the top row is replaced by a new one with its id: the
    prober tells them apart by the top row's created_at."""
    without_autoincrement(sqlite_db)
    stamps = Stamps()
    worker = make_worker(sqlite_db.config(), stamps.registry)
    worker.work_off(0)
    prober = Prober(worker.slots.wakeup, 0.1)
    top = sqlite_db.insert("--- !ruby/object:RubyOnly {}\n")
    assert prober.probe()  # the first look rings
    assert not prober.probe()
    assert replace_top(sqlite_db, top, stamp_handler(1)) == top  # the id is reused
    assert prober.probe()
    assert not prober.probe()  # nothing new since
    # Two rows deleted from the top, one inserted: MAX(id) went down, the new row is at it.
    second = sqlite_db.insert("--- !ruby/object:RubyOnly {}\n")
    assert not prober.probe()  # not ours
    with sqlite_db.engine.begin() as conn:
        conn.execute(sqlite_db.t.delete().where(sqlite_db.t.c.id == second))
    assert replace_top(sqlite_db, top, stamp_handler(2)) == top
    assert prober.probe()
    # A deletion alone adds nothing: no ring.
    with sqlite_db.engine.begin() as conn:
        conn.execute(sqlite_db.t.delete().where(sqlite_db.t.c.id == top))
    assert not prober.probe()
    worker.close()


def test_sqlite_without_autoincrement_an_idle_worker_takes_a_reused_id_promptly(
        sqlite_db: DB) -> None:
    without_autoincrement(sqlite_db)
    stamps = Stamps()
    with running(sqlite_db, stamps):
        top = sqlite_db.insert("--- !ruby/object:RubyOnly {}\n")
        time.sleep(0.5)  # the prober has seen it (and it is not ours: no ring)
        committed = time.time()
        assert replace_top(sqlite_db, top, stamp_handler(1)) == top
        assert stamps.ran.wait(SLEEP_DELAY)
    assert stamps.started[1] - committed < 1.0


def test_a_ring_wakes_one_waiting_slot_not_all(sqlite_db: DB) -> None:
    stamps = Stamps()
    worker = make_worker(sqlite_db.config(sleep_delay=SLEEP_DELAY, concurrency=3),
                         stamps.registry)
    worker.work_off(0)
    wakeup = worker.slots.wakeup
    woke: list[str] = []
    threads = [threading.Thread(target=lambda me=me: (wakeup.wait(me), woke.append(me)))
               for me in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: wakeup._idle == 3, 2)
        wakeup.ring()
        time.sleep(0.5)
        assert len(woke) == 1
        wakeup.found(woke[0])  # it found a row: the next one is woken
        time.sleep(0.5)
        assert len(woke) == 2
    finally:
        wakeup.ring(everyone=True)
        for thread in threads:
            thread.join(2)
        worker.close()
    assert sorted(woke) == ["a", "b", "c"]


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_burst_of_rows_brings_in_every_idle_slot(sqlite_db: DB) -> None:
    """One ring, then each slot that finds a row wakes the next: four rows, four slots, in
    parallel (each job holds its slot for 1 s: one slot alone would start them 1 s apart)."""
    stamps = Stamps()
    started: list[float] = []

    @stamps.registry.run("SlowJob")
    def slow(j: Job) -> None:
        started.append(time.time())
        time.sleep(1.0)

    with running(sqlite_db, stamps, concurrency=4):
        sqlite_db.insert_many(["--- !ruby/object:SlowJob {}\n"] * 4)
        assert wait_until(lambda: len(started) == 4, 3)
    assert max(started) - min(started) < 0.8


def test_a_bug_in_the_wakeup_never_ends_a_slot(sqlite_db: DB, monkeypatch: Any) -> None:
    """The next-run_at lookup and the prober raising something unexpected: the slot polls
    on at sleep_delay, the prober keeps running."""
    from dj_consumer import wakeup as wakeup_module

    def bug(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(wakeup_module.Wakeup, "next_run_at", bug)
    monkeypatch.setattr(wakeup_module.Prober, "probe", bug)
    stamps = Stamps()
    with running(sqlite_db, stamps, sleep_delay=0.5):
        sqlite_db.insert(stamp_handler(1))
        assert stamps.ran.wait(3)
