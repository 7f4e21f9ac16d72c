"""reserve_batch: several rows per reserve, successes deleted together; same outcomes."""

from __future__ import annotations

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.test_lifecycle import drain
from tests.integration.test_protocol import now_clock, obj


def test_batch_runs_in_ready_order_and_writes_every_outcome(db: DB) -> None:
    reg = Registry()
    order: list[int] = []

    def work(j: Job) -> None:
        order.append(j.payload["n"])
        if j.payload["n"] % 3 == 0:
            raise RuntimeError("every third fails")

    reg.run("J")(work)
    clock = now_clock()
    ids = {}
    for n in range(12):
        ids[n] = db.insert(obj("J", n=n), priority=12 - n)  # reverse priority
    ruby = db.insert(obj("RubyJob"), priority=-5)
    w = make_worker(db.config(reserve_batch=5), reg, clock=clock)
    assert w.work_off(100) == (8, 4)
    assert order == list(range(11, -1, -1))
    for n, job_id in ids.items():
        row = db.row(job_id)
        if n % 3 == 0:
            assert row.attempts == 1 and row.locked_by is None
            assert row.last_error.startswith("RuntimeError: every third fails\n")
        else:
            assert row is None
    assert db.row(ruby).locked_by is None


def test_batched_workers_drain_each_job_exactly_once(db: DB) -> None:
    configs = [{"worker_id": f"b{i}", "reserve_batch": 7, "concurrency": 2} for i in range(3)]
    counts = drain(db, 300, configs)
    assert sorted(counts) == list(range(300)) and max(counts.values()) == 1
    assert db.count() == 0


def test_stop_mid_batch_unlocks_the_rest(db: DB) -> None:
    reg = Registry()
    holder: list[object] = []

    def first(j: Job) -> None:
        holder[0].stop()  # type: ignore[attr-defined]

    reg.run("J")(first)
    ids = [db.insert(obj("J")) for _ in range(5)]
    w = make_worker(db.config(reserve_batch=5), reg)
    holder.append(w)
    w.start()
    assert db.row(ids[0]) is None
    for job_id in ids[1:]:
        row = db.row(job_id)
        assert (row.locked_by, row.locked_at, row.attempts) == (None, None, 0)


def test_heartbeat_renews_rows_waiting_in_a_batch(db: DB) -> None:
    import time

    reg = Registry()
    seen: dict[int, object] = {}

    def slow(j: Job) -> None:
        if j.payload["n"] == 0:
            seen[0] = db.row(j.id + 1).locked_at
            time.sleep(2.5)
            seen[1] = db.row(j.id + 1).locked_at

    reg.run("J")(slow)
    db.insert(obj("J", n=0))
    db.insert(obj("J", n=1))
    w = make_worker(db.config(reserve_batch=2, heartbeat_interval=1, lock_timeout=5), reg)
    assert w.work_off(2) == (2, 0)
    w.close()
    assert seen[1] > seen[0]  # type: ignore[operator]
