"""Issue 12 item 9 through a real worker: coroutine handlers run (they "succeeded" without
running), on every database, in work_off and in slot threads."""

from __future__ import annotations

import asyncio

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.test_protocol import obj


def test_async_handlers_run_before_their_row_is_deleted(db: DB) -> None:
    reg, ran = Registry(), []

    @reg.run("AsyncJob")
    async def work(j: Job) -> None:
        await asyncio.sleep(0.01)
        ran.append(j.payload["n"])

    ids = [db.insert(obj("AsyncJob", n=n)) for n in range(3)]
    w = make_worker(db.config(), reg)
    assert w.work_off() == (3, 0)
    w.close()
    assert sorted(ran) == [0, 1, 2]
    assert all(db.row(i) is None for i in ids)


def test_async_handlers_in_slot_threads_and_async_errors(db: DB) -> None:
    reg, ran = Registry(), []

    @reg.run("AsyncJob")
    async def work(j: Job) -> None:
        await asyncio.sleep(0)
        if j.payload["n"] == 0:
            raise RuntimeError("async failure")
        ran.append(j.payload["n"])

    ids = [db.insert(obj("AsyncJob", n=n)) for n in range(6)]
    w = make_worker(db.config(concurrency=2, exit_on_complete=True), reg)
    w.start()
    w.close()
    assert sorted(ran) == [1, 2, 3, 4, 5]
    failed = db.row(ids[0])
    assert failed.attempts == 1 and failed.last_error.startswith("RuntimeError: async failure\nTraceback")
