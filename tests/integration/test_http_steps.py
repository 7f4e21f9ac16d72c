"""contrib.http_steps against a local HTTP server: progress per step, resume at the failed step,
attempt ** retry_exponent, poison after max_attempts, and no credential written anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog

from dj_consumer import Registry
from dj_consumer.clock import FakeClock
from dj_consumer.contrib import http_steps
from dj_consumer.executor import Executor, Watchdog
from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.runs.reporting import NullReporter, StoreReporter, reporting
from tests.conftest import DB
from tests.http_server import Server, http_server
from tests.integration.runs_helpers import RunsDB, job, runs_tables


@pytest.fixture
def server() -> Iterator[Server]:
    with http_server() as s:
        yield s


class Attempts:
    """Attempts of one job as the worker will run them: record started, the executor's
    Outcome, record finished; the handler's reporter is a StoreReporter on the runs table."""

    def __init__(self, rdb: RunsDB, **register: Any) -> None:
        self.rdb, self.clock = rdb, FakeClock()
        self.registry = Registry()
        http_steps.register(self.registry, "HttpSteps", **register)
        self.spec = self.registry.spec("HttpSteps")
        self.executor = Executor(clock=self.clock, watchdog=Watchdog(self.clock.monotonic),
                                 max_run_time=60, destroy_failed_jobs=False)

    def run(self, j: Job) -> Outcome:
        assert self.spec is not None
        store, engine = self.rdb.store, self.rdb.engine
        with engine.begin() as conn:
            store.start(conn, j, self.clock.now())
        with reporting(StoreReporter(engine, store, j.id, clock=self.clock)):
            outcome = self.executor.execute(j, self.spec)
        state = {Succeeded: "succeeded", Rescheduled: "rescheduled", Failed: "failed"}[type(outcome)]
        with engine.begin() as conn:
            store.finish(conn, j.id, state, attempts=getattr(outcome, "attempts", j.attempts),
                         now=self.clock.now(), error=getattr(outcome, "last_error", None))
        return outcome


def steps(server: Server, **charge: Any) -> dict[str, Any]:
    return {"steps": [
        {"name": "create", "method": "POST", "url": f"{server.url}/create", "body": {"n": 1},
         "expect": 201},
        {"name": "charge", "method": "POST", "url": f"{server.url}/charge", **charge},
        {"name": "notify", "method": "GET", "url": f"{server.url}/notify"},
    ]}


def test_a_failed_step_is_retried_from_that_step(db: DB, server: Server) -> None:
    server.plan = {"/create": [201], "/charge": [503, 200]}
    with runs_tables(db) as rdb:
        attempts = Attempts(rdb)
        first = attempts.run(job(1, steps(server, retry_exponent=2), name="HttpSteps"))
        assert isinstance(first, Rescheduled)
        assert first.run_at == attempts.clock.now() + timedelta(seconds=1)  # 1 ** 2
        run = rdb.record(1)
        assert (run.state, run.progress_current, run.progress_total, run.progress_stage) == \
            ("rescheduled", 1, 3, "charge")
        assert run.checkpoint["done"] == {"create": 201}
        assert run.checkpoint["failed"]["status"] == 503
        assert run.error_message.startswith(
            f"step charge: POST {server.url}/charge returned 503, expected 2xx")

        second = attempts.run(job(1, steps(server, retry_exponent=2), name="HttpSteps",
                                  attempts=1))
        assert isinstance(second, Succeeded)
        assert (server.count("/create"), server.count("/charge"), server.count("/notify")) == \
            (1, 2, 1)  # the finished step was not sent again
        run = rdb.record(1)
        assert (run.state, run.progress_current, run.progress_stage) == ("succeeded", 3, "notify")
        assert run.checkpoint["done"] == {"create": 201, "charge": 200, "notify": 200}
        assert json.loads(server.seen[0].body) == {"n": 1}


def test_the_delay_is_attempt_to_the_power_of_the_failed_steps_exponent(
        sqlite_db: DB, server: Server) -> None:
    server.plan = {"/create": [201], "/charge": [500]}
    with runs_tables(sqlite_db) as rdb:
        attempts = Attempts(rdb)
        outcome = attempts.run(job(2, steps(server, retry_exponent=3), name="HttpSteps",
                                   attempts=2))
        assert isinstance(outcome, Rescheduled) and outcome.attempts == 3
        assert outcome.run_at == attempts.clock.now() + timedelta(seconds=27)  # 3 ** 3
        server.plan = {"/create": [500]}  # no exponent given: 4, Ruby's curve without its + 5
        outcome = attempts.run(job(3, steps(server), name="HttpSteps", attempts=1))
        assert isinstance(outcome, Rescheduled)
        assert outcome.run_at == attempts.clock.now() + timedelta(seconds=16)


def test_poison_after_max_attempts_of_the_registration_or_the_payload(
        sqlite_db: DB, server: Server) -> None:
    server.plan = {"/create": [201], "/charge": [500]}
    with runs_tables(sqlite_db) as rdb:
        attempts = Attempts(rdb, max_attempts=3)
        assert attempts.spec is not None and attempts.spec.max_attempts == 3
        last = attempts.run(job(4, steps(server), name="HttpSteps", attempts=2, max_attempts=3))
        assert isinstance(last, Failed) and rdb.record(4).state == "failed"
        payload = {**steps(server), "max_attempts": 2}
        poisoned = attempts.run(job(5, payload, name="HttpSteps", attempts=1))
        assert isinstance(poisoned, Failed) and "(attempt 2 of 2: giving up)" in poisoned.last_error


def test_a_malformed_payload_fails_at_once(sqlite_db: DB) -> None:
    with runs_tables(sqlite_db) as rdb:
        attempts = Attempts(rdb)
        for payload, words in ((({"steps": []}), "needs 'steps'"),
                               ({"steps": [{"url": "ftp://x"}]}, "http(s) url"),
                               ({"steps": [{"url": "http://x", "expect": "two"}]}, "malformed")):
            outcome = attempts.run(job(6, payload, name="HttpSteps"))
            assert isinstance(outcome, Failed) and outcome.attempts == 1, payload
            assert words in outcome.last_error


SECRETS = ("s3cr3t-pass", "tok-123456789", "Bearer-abcdefgh", "hunter22", "sig-987654321",
           "cookie-value-1")


def test_credentials_reach_no_log_no_last_error_no_run_record(sqlite_db: DB,
                                                             server: Server) -> None:
    server.plan = {"/charge": [500]}
    url = server.url.replace("http://", "http://ada:s3cr3t-pass@")
    payload = {"steps": [
        {"name": "create", "method": "POST",
         "url": f"{server.url}/create?token=tok-123456789&page=2",
         "headers": {"Authorization": "Bearer Bearer-abcdefgh", "Cookie": "cookie-value-1",
                     "X-Signature": "sig-987654321"},
         "body": {"user": {"password": "hunter22"}}},
        {"name": "charge", "method": "POST", "url": f"{url}/charge?token=tok-123456789"},
    ]}
    refused = {"steps": [{"name": "down", "url": "http://ada:s3cr3t-pass@127.0.0.1:9/x"
                                                 "?token=tok-123456789", "timeout": 5}]}
    # httpx quotes an illegal header value whole in its error: it is masked too.
    illegal = {"steps": [{"name": "bad", "url": f"{server.url}/x",
                          "headers": {"Authorization": "Bearer tok-123456789\n"}}]}
    with runs_tables(sqlite_db) as rdb, structlog.testing.capture_logs() as logs:
        attempts = Attempts(rdb, secret_keys=("x-signature",))
        failed = attempts.run(job(7, payload, name="HttpSteps"))
        down = attempts.run(job(8, refused, name="HttpSteps"))
        bad = attempts.run(job(9, illegal, name="HttpSteps"))
        records = [rdb.record(7), rdb.record(8), rdb.record(9)]
    assert isinstance(failed, Rescheduled) and isinstance(down, Rescheduled)
    assert isinstance(bad, Rescheduled) and "LocalProtocolError: Illegal header value" in bad.last_error
    sent = server.seen[0]
    assert sent.headers["Authorization"] == "Bearer Bearer-abcdefgh"  # the server got them
    assert b"hunter22" in sent.body and "tok-123456789" in sent.path
    assert server.seen[1].headers["Authorization"].startswith("Basic ")  # from the userinfo
    assert "step charge: POST http://127.0.0.1" in failed.last_error
    assert "token=%5BREDACTED%5D" in failed.last_error or "token=[REDACTED]" in failed.last_error
    assert "step down: GET http://127.0.0.1:9/x" in down.last_error
    written = [failed.last_error, down.last_error, bad.last_error, json.dumps(logs, default=str),
               *(json.dumps(r.as_dict(), default=str) for r in records)]
    for text in written:
        for secret in SECRETS:
            assert secret not in text, (secret, text)


def test_the_result_is_each_steps_status_and_no_runs_table_is_needed(server: Server) -> None:
    server.plan = {"/create": [201]}
    registry = Registry()
    http_steps.register(registry, "Calls", reporter_for=lambda j: NullReporter())
    spec = registry.spec("Calls")
    assert spec is not None and spec.run is not None
    result = spec.run(job(9, steps(server), name="Calls"))
    assert result == {"steps": [{"name": "create", "status": 201},
                                {"name": "charge", "status": 200},
                                {"name": "notify", "status": 200}]}


def test_the_worker_records_each_step_and_resumes_after_a_failed_one(db: DB,
                                                                     server: Server) -> None:
    """End to end with a real worker: progress per step (stage = step name) in the record,
    the failed step retried after attempt ** retry_exponent, finished steps not sent again."""
    import dj_consumer
    from dj_consumer import make_worker

    server.plan = {"/create": [201], "/charge": [503, 200]}
    with runs_tables(db) as rdb:
        registry = Registry()
        http_steps.register(registry, "HttpSteps")
        job_id = dj_consumer.enqueue(rdb.config(), "HttpSteps",
                                     steps(server, retry_exponent=2), registry=registry)

        def work() -> tuple[int, int]:
            w = make_worker(rdb.config(), registry)
            try:
                return w.work_off(1)
            finally:
                w.close()

        assert work() == (0, 1)
        run = rdb.record(job_id)
        assert (run.state, run.attempts, run.progress_current, run.progress_total,
                run.progress_stage) == ("rescheduled", 1, 1, 3, "charge")
        assert run.checkpoint["done"] == {"create": 201}
        row = db.row(job_id)
        assert (row.run_at - row.updated_at) <= timedelta(seconds=2)  # 1 ** 2 s
        db.update(job_id, run_at=row.created_at)
        assert work() == (1, 0)
        assert (server.count("/create"), server.count("/charge"), server.count("/notify")) == \
            (1, 2, 1)
        run = rdb.record(job_id)
        assert (run.state, run.attempts, run.progress_current, run.progress_stage) == \
            ("succeeded", 1, 3, "notify")
        assert run.result == {"steps": [{"name": "create", "status": 201},
                                        {"name": "charge", "status": 200},
                                        {"name": "notify", "status": 200}]}
