"""Batches: parts as delayed_jobs rows, counts per part, on_complete exactly once — also when
two connections finish the last two parts at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dj_consumer
from dj_consumer import ruby_yaml, runs
from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.db import make_engine
from dj_consumer.runs.batches import PartFinished, finish_batch_part
from dj_consumer.runs.records import PartSummary
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, runs_tables


@pytest.fixture
def rdb(db: DB) -> Iterator[RunsDB]:
    with runs_tables(db) as r:
        yield r


def summary(processed: int, skipped: int = 0, errors: dict[Any, str] | None = None) -> PartSummary:
    s = PartSummary(processed=processed, skipped=skipped)
    for item, message in (errors or {}).items():
        s.error(item, message)
    return s


def finish(rdb: RunsDB, batch_id: str, index: int, part: PartSummary) -> PartFinished:
    with rdb.engine.begin() as conn:
        return finish_batch_part(conn, rdb.store, batch_id, index, part,
                                 now=SystemClock().now())


def on_complete_jobs(db: DB) -> list[Any]:
    return [ruby_yaml.load(r.handler) for r in db.rows() if "BatchDone" in r.handler]


def test_enqueue_batch_splits_items_into_rows_ruby_can_load(rdb: RunsDB) -> None:
    made = dj_consumer.enqueue_batch("ImportJob", [1, 2, 3, 4, 5], batch_size=2,
                                     on_complete="BatchDone", queue="imports",
                                     config=rdb.config())
    rows = rdb.db.rows()
    assert [r.id for r in rows] == made.job_ids and len(rows) == 3
    parsed = [ruby_yaml.load(r.handler) for r in rows]
    assert {p.name for p in parsed} == {"ImportJob"} and {r.queue for r in rows} == {"imports"}
    assert [p.payload for p in parsed] == [
        {"batch_id": made.batch_id, "batch_index": i, "items": items}
        for i, items in enumerate([[1, 2], [3, 4], [5]])]
    batch = runs.batch(made.batch_id, config=rdb.config())
    assert batch is not None
    assert (batch.name, batch.total, batch.total_batches, batch.done_batches, batch.complete) == \
        ("ImportJob", 5, 3, 0, False)


def test_parts_add_up_and_the_last_one_enqueues_on_complete_once(rdb: RunsDB) -> None:
    made = runs.enqueue_batch("ImportJob", list(range(6)), batch_size=2,
                              on_complete="BatchDone", config=rdb.config())
    bid = made.batch_id
    assert finish(rdb, bid, 1, summary(1, errors={3: "no such row"})) == PartFinished(True)
    assert finish(rdb, bid, 1, summary(2)) == PartFinished(False)  # counted before: nothing
    partial = runs.batch(bid, config=rdb.config())
    assert partial is not None
    assert (partial.done_batches, partial.processed, partial.errored) == (1, 1, 1)
    assert partial.error_items == [{"id": 3, "message": "no such row"}]
    assert finish(rdb, bid, 0, summary(1, skipped=1)) == PartFinished(True)
    done = finish(rdb, bid, 2, summary(0, errors={4: "bad", 5: "worse"}))
    assert done.completed and done.on_complete_job_id is not None
    assert finish(rdb, bid, 2, summary(2)) == PartFinished(False)
    (complete,) = on_complete_jobs(rdb.db)
    assert complete.payload == {
        "batch_id": bid, "name": "ImportJob", "total": 6, "batches": 3, "processed": 2,
        "skipped": 1, "errored": 3,
        "errors": [{"id": 3, "message": "no such row"}, {"id": 4, "message": "bad"},
                   {"id": 5, "message": "worse"}]}
    batch = runs.batch(bid, config=rdb.config())
    assert batch is not None and batch.complete
    assert batch.on_complete_job_id == done.on_complete_job_id
    assert batch.error_items == complete.payload["errors"]


def test_a_batch_without_on_complete_completes_quietly(rdb: RunsDB) -> None:
    made = runs.enqueue_batch("ImportJob", ["a"], config=rdb.config())
    assert finish(rdb, made.batch_id, 0, summary(1)) == PartFinished(True, True, None)


def test_enqueue_batch_needs_the_tables(db: DB) -> None:
    with pytest.raises(dj_consumer.ConfigError, match="no run records table"):
        runs.enqueue_batch("ImportJob", [1], config=db.config(runs_table=f"{db.table}_x"))


ROUNDS = 6


def test_two_connections_finishing_the_last_two_parts_enqueue_on_complete_once(
        rdb: RunsDB) -> None:
    """Each round: a batch of 2 parts; two threads, each on its own connection and in its own
    transaction (deleting its part's job first, as the worker's outcome write would), finish
    one part each at the same moment. Exactly one on_complete per batch, with both counts."""
    racing_rounds(rdb, isolation=None)


def test_the_race_at_rubys_repeatable_read_on_mariadb(mariadb_db: DB) -> None:
    """Ruby's mysql2 connections run at REPEATABLE READ: the counts are UPDATEs, which read
    the latest committed row under its lock, so a Ruby finisher races as safely."""
    with runs_tables(mariadb_db) as rdb:
        racing_rounds(rdb, isolation="REPEATABLE READ")


def racing_rounds(rdb: RunsDB, *, isolation: str | None) -> None:
    cfg = Config.from_mapping(rdb.config())
    engine = make_engine(cfg.url, cfg, autocommit=False)  # as the worker's transactions
    if isolation is not None:
        engine = engine.execution_options(isolation_level=isolation)
    try:
        for _ in range(ROUNDS):
            made = runs.enqueue_batch("ImportJob", [1, 2], batch_size=1, on_complete="BatchDone",
                                      config=rdb.config())
            results = race(rdb, engine, made.batch_id, made.job_ids)
            assert sorted(r.completed for r in results) == [False, True], results
        batches = on_complete_jobs(rdb.db)
        assert len(batches) == ROUNDS
        assert {(b.payload["processed"], b.payload["errored"]) for b in batches} == {(1, 1)}
    finally:
        engine.dispose()


def race(rdb: RunsDB, engine: sa.Engine, batch_id: str, job_ids: list[int]) -> list[PartFinished]:
    both = threading.Barrier(2, timeout=30)
    results: list[PartFinished] = []
    errors: list[BaseException] = []
    t = rdb.db.t
    sqlite = rdb.db.backend == "sqlite"

    def finisher(index: int) -> None:
        part = summary(1) if index == 0 else summary(0, errors={2: "bad"})
        try:
            with engine.connect() as conn:
                if sqlite:  # one writer at a time: meet before the transaction
                    both.wait()
                with conn.begin():
                    conn.execute(sa.delete(t).where(t.c.id == job_ids[index]))
                    if not sqlite:
                        both.wait()
                    results.append(finish_batch_part(conn, rdb.store, batch_id, index, part,
                                                     now=SystemClock().now(),
                                                     job_id=job_ids[index]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finisher, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results
