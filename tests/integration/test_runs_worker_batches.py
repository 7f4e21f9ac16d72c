"""Batches worked by the worker: j.track / j.skip / errors=, each part's summary in its run
record and on job.succeeded, and on_complete enqueued exactly once — also when two workers
finish the last two parts at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

import dj_consumer
from dj_consumer import SKIP, Job, Registry, make_worker, runs
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, runs_tables


@pytest.fixture
def rdb(db: DB) -> Iterator[RunsDB]:
    with runs_tables(db) as r:
        yield r


def work(rdb: RunsDB, registry: Registry, n: int = 20, **cfg: Any) -> tuple[int, int]:
    w = make_worker(rdb.config(**cfg), registry)
    try:
        return w.work_off(n)
    finally:
        w.close()


def registry(done: list[Any], errors: str = "continue", **opts: Any) -> Registry:
    reg = Registry()

    @reg.run("ImportJob", **opts)
    def import_job(j: Job) -> None:
        for item in j.track(j.payload["items"], errors=errors):
            if item["id"] % 5 == 0:
                j.skip(item)
                continue
            if item["id"] == 7:
                raise ValueError("no such user 7")

    @reg.run("ImportDone")
    def import_done(j: Job) -> None:
        done.append(j.payload)

    return reg


def items(n: int) -> list[dict[str, int]]:
    return [{"id": i} for i in range(1, n + 1)]


def test_track_skip_and_errors_reach_the_batch_and_on_complete_once(rdb: RunsDB) -> None:
    made = dj_consumer.enqueue_batch("ImportJob", items(10), batch_size=4,
                                     on_complete="ImportDone", config=rdb.config())
    done: list[Any] = []
    with capture_logs() as logs:
        assert work(rdb, registry(done)) == (4, 0)  # 3 parts, then on_complete
    batch = runs.batch(made.batch_id, config=rdb.config())
    assert batch is not None and batch.complete
    assert (batch.done_batches, batch.processed, batch.skipped, batch.errored) == (3, 7, 2, 1)
    assert batch.error_items == [{"id": 7, "message": "ValueError: no such user 7"}]
    assert len(done) == 1
    assert {k: done[0][k] for k in ("processed", "skipped", "errored", "errors")} == \
        {"processed": 7, "skipped": 2, "errored": 1,
         "errors": [{"id": 7, "message": "ValueError: no such user 7"}]}
    second = rdb.record(made.job_ids[1])  # items 5..8: 5 skipped, 7 errored
    assert (second.state, second.batch_id, second.batch_index) == \
        ("succeeded", made.batch_id, 1)
    assert second.result == {"processed": 2, "skipped": 1, "errored": 1,
                             "errors": [{"id": 7, "message": "ValueError: no such user 7"}]}
    succeeded = [e for e in logs if e["event"] == "job.succeeded" and e.get("name") == "ImportJob"]
    assert sorted((e["processed"], e["skipped"], e["errored"]) for e in succeeded) == \
        [(1, 1, 0), (2, 1, 1), (4, 0, 0)]


def test_errors_raise_fails_the_attempt_and_a_part_failed_for_good_still_counts(
        rdb: RunsDB) -> None:
    made = dj_consumer.enqueue_batch("ImportJob", items(8), batch_size=4,
                                     on_complete="ImportDone", config=rdb.config())
    done: list[Any] = []
    assert work(rdb, registry(done, errors="raise", max_attempts=1)) == (2, 1)
    second = rdb.record(made.job_ids[1])
    assert (second.state, second.error_class) == ("failed", "ValueError")
    batch = runs.batch(made.batch_id, config=rdb.config())
    assert batch is not None and batch.complete
    # part 2 (5..8): 5 skipped, 6 processed, then 7 raised: 7 and 8 errored with its error
    assert (batch.processed, batch.skipped, batch.errored) == (4 + 1, 1, 2)
    assert [e["id"] for e in batch.error_items] == [7, 8]
    assert len(done) == 1 and done[0]["errored"] == 2


def test_a_callback_returning_skip_and_a_handler_that_does_not_track(rdb: RunsDB) -> None:
    reg = Registry()

    @reg.run("Each")
    def each(j: Job) -> None:
        j.track(j.payload["items"], lambda item: SKIP if item % 2 else None)

    @reg.run("Plain")
    def plain(j: Job) -> None:
        pass

    a = dj_consumer.enqueue_batch("Each", [1, 2, 3, 4, 5], batch_size=5, config=rdb.config())
    b = dj_consumer.enqueue_batch("Plain", [1, 2, 3], batch_size=2, config=rdb.config())
    assert work(rdb, reg) == (3, 0)
    ba, bb = runs.batch(a.batch_id, config=rdb.config()), runs.batch(b.batch_id, config=rdb.config())
    assert ba is not None and (ba.processed, ba.skipped, ba.complete) == (2, 3, True)
    assert bb is not None and (bb.processed, bb.skipped, bb.complete) == (3, 0, True)


def test_two_workers_finishing_the_last_two_parts_enqueue_on_complete_once(rdb: RunsDB) -> None:
    for _ in range(4):
        race_once(rdb)


def race_once(rdb: RunsDB) -> None:
    made = dj_consumer.enqueue_batch("Race", [1, 2, 3, 4], batch_size=2,
                                     on_complete="RaceDone", config=rdb.config())
    both = threading.Barrier(2, timeout=20)
    reg = Registry()

    @reg.run("Race")
    def race(j: Job) -> None:
        for _item in j.track(j.payload["items"]):
            pass
        both.wait()  # both parts return at once: their outcomes race

    @reg.run("RaceDone")
    def race_done(j: Job) -> None:
        pass

    results: list[Any] = []

    def one(k: int) -> None:
        w = make_worker(rdb.config(worker_id=f"racer{k}", queues=["racing"]), reg)
        try:
            results.append(w.work_off(1))
        finally:
            w.close()

    for job_id in made.job_ids:
        rdb.db.update(job_id, queue="racing")
    threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [(1, 0), (1, 0)]
    batch = runs.batch(made.batch_id, config=rdb.config())
    assert batch is not None and batch.complete and batch.processed == 4
    on_complete = [r for r in rdb.db.rows() if "RaceDone" in r.handler
                   and made.batch_id in r.handler]
    assert len(on_complete) == 1 and on_complete[0].id == batch.on_complete_job_id
