"""Bad rows in a live table: the worker never stops, and each row gets Ruby's outcome or is
left alone, with a log line that says which.

| row | outcome | log |
|---|---|---|
| unparseable handler, a name we run | failed at once, attempts unchanged (DeserializationError) | job.unparseable, job.failed |
| unparseable handler, a name we do not run | left alone for Ruby | none (never reserved)¹ |
| a near-miss name (PyOnlyJobX) | left alone | none¹ |
| our name, unexpected payload (KeyError) | a normal failed attempt: attempts 1, rescheduled | job.rescheduled |
| run_at NULL | left alone: `NULL <= now` is not true, in Ruby either | none¹ |
| run_at NULL, locked_by = this worker | run: Ruby's `OR locked_by = me` | job.succeeded |
| deleted by Rails while it runs | nothing written over it | job.lock_lost row_exists=False |

¹ A row the ready query never returns cannot be logged per poll; `dj-consumer why ID`
(diagnose.why) names the reason, and this test checks that it does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import structlog

from dj_consumer import Job, Registry, diagnose, make_worker
from dj_consumer.config import Config
from dj_consumer.store import Store
from tests.integration.test_protocol import struct
from tests.interop.conftest import Interop

pytestmark = pytest.mark.ruby


def test_bad_rows_in_a_live_table(interop: Interop) -> None:
    db, runs = interop.db, interop.runs
    registry = Registry()

    @registry.run("PyOnlyJob")
    def py_only(j: Job) -> None:
        runs.record(j.payload["key"], job_id=j.id)

    @registry.run("PayloadJob")
    def payload_job(j: Job) -> None:
        runs.record(str(j.payload.get("key")), job_id=j.id)
        j.payload["list_id"]  # the Rails side changed the job's attributes

    @registry.run("DeletedJob")
    def deleted_job(j: Job) -> None:
        interop.ruby.destroy([j.id])  # a Rails console: Delayed::Job.find(id).destroy
        runs.record(j.payload["key"], job_id=j.id)
        if j.payload.get("fail"):
            raise RuntimeError("boom after the row was deleted")

    config = Config.from_mapping(db.config(exit_on_complete=True))
    me = config.worker_name()
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    early = now - timedelta(minutes=5)  # bad rows first, so good rows after them prove we went on
    ids = {
        "unparseable_ours": db.insert("--- !ruby/struct:PyOnlyJob\nkey: [unclosed\n", run_at=early),
        "unparseable_theirs": db.insert("--- !ruby/struct:RubyOnlyJob\nkey: [unclosed\n", run_at=early),
        "near_miss": db.insert(struct("PyOnlyJobX", key="near"), run_at=early),
        "bad_payload": db.insert(struct("PayloadJob", key="payload"), run_at=early),
        "null_run_at": db.insert(struct("PyOnlyJob", key="null"), run_at=None),
        "null_run_at_mine": db.insert(struct("PyOnlyJob", key="null-mine"), run_at=None,
                                      locked_by=me, locked_at=now),
        "deleted": db.insert(struct("DeletedJob", key="deleted"), run_at=early),
        "deleted_failing": db.insert(struct("DeletedJob", key="deleted-failing", fail="yes"),
                                     run_at=early),
        "good_1": db.insert(struct("PyOnlyJob", key="good-1"), run_at=now),
        "good_2": db.insert(struct("PyOnlyJob", key="good-2"), run_at=now),
    }
    # Ruby's ready_to_run agrees on the NULL run_at rows, for another worker and for `me`.
    views = {v["id"]: v for v in interop.ruby.inspect(ids.values(), worker_name=me)}
    assert views[ids["null_run_at"]]["ready"] is False
    assert views[ids["null_run_at_mine"]]["ready"] is True
    others = {v["id"]: v for v in interop.ruby.inspect(ids.values(), worker_name="someone else")}
    assert others[ids["null_run_at_mine"]]["ready"] is False

    worker = make_worker(config, registry)
    try:
        with structlog.testing.capture_logs() as logs:
            worker.start()  # exit_on_complete: returns when nothing it can run is ready
    finally:
        worker.close()

    def events(key: str) -> list[str]:
        return [e["event"] for e in logs if e.get("job_id") == ids[key]]

    rows = {r.id: r for r in db.rows()}
    performed = {r.job_key for r in runs.performed()}
    assert {"good-1", "good-2", "null-mine", "deleted", "deleted-failing", "payload"} == performed

    # unparseable, our name: Ruby's DeserializationError path
    r = rows[ids["unparseable_ours"]]
    assert r.failed_at is not None and r.attempts == 0 and r.locked_by is None
    assert r.last_error.startswith("Job failed to load: ")
    assert "job.unparseable" in events("unparseable_ours")

    # left alone: not ours to run, or not ready for anyone
    # (never reserved, so no log line; `dj-consumer why ID` says which, from diagnose.why)
    store = Store(config)
    store.check()
    try:
        for key, reason in (("unparseable_theirs", "handler"), ("near_miss", "PyOnlyJobX"),
                            ("null_run_at", "run_at")):
            r = rows[ids[key]]
            assert (r.failed_at, r.attempts, r.locked_by, r.last_error) == (None, 0, None, None), key
            assert events(key) == [], (key, events(key))
            why = diagnose.why(store.get(ids[key]), ids[key], config, registry,
                               datetime.now(UTC).replace(tzinfo=None))
            assert why and any(reason in line for line in why), (key, why)
    finally:
        store.close()

    # unexpected payload: a normal failed attempt
    r = rows[ids["bad_payload"]]
    assert r.attempts == 1 and r.failed_at is None and r.locked_by is None
    assert r.run_at > now and r.last_error.split("\n", 1)[0] == "KeyError: 'list_id'"
    assert "job.rescheduled" in events("bad_payload")

    # NULL run_at locked by this very worker name: run (and deleted) like Ruby would
    assert ids["null_run_at_mine"] not in rows
    assert "job.succeeded" in events("null_run_at_mine")

    # deleted by Rails mid-run: gone, nothing written, and the log says so
    for key in ("deleted", "deleted_failing"):
        assert ids[key] not in rows
        lost = [e for e in logs if e.get("job_id") == ids[key] and e["event"] == "job.lock_lost"]
        assert len(lost) == 1 and lost[0]["row_exists"] is False, (key, events(key))

    for key in ("good_1", "good_2"):
        assert ids[key] not in rows and "job.succeeded" in events(key)
