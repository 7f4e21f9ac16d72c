"""Transient database errors are retried around the whole statement, logged as db.retrying."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.test_protocol import obj

# Make lock waits give up fast, so a held row lock turns into the server's own
# "lock wait timeout" / "lock not available" error for the worker.
SHORT_LOCK_WAIT = {
    "mariadb": "init_command=" + quote("SET SESSION innodb_lock_wait_timeout=1"),
    "postgresql": "options=" + quote("-c lock_timeout=300"),
}


def test_lock_wait_timeout_is_retried_not_a_failed_job(server_db: DB) -> None:
    db = server_db
    url = db.url + ("&" if "?" in db.url else "?") + SHORT_LOCK_WAIT[db.backend]
    reg = Registry()
    blocker_ready = threading.Event()
    release = threading.Event()

    def hold_lock(job_id: int) -> None:
        engine = sa.create_engine(db.url)
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text(f"SELECT id FROM {db.table} WHERE id = :id FOR UPDATE"), {"id": job_id})
            blocker_ready.set()
            release.wait(20)
        engine.dispose()

    def work(j: Job) -> None:
        threading.Thread(target=hold_lock, args=(j.id,), daemon=True).start()
        assert blocker_ready.wait(10)
        threading.Timer(2.5, release.set).start()  # the DELETE waits, times out, is retried

    reg.run("J")(work)
    job_id = db.insert(obj("J"))
    w = make_worker(dict(db.config(), database_url=url), reg)
    with capture_logs() as logs:
        started = time.monotonic()
        assert w.work_off() == (1, 0)
    assert time.monotonic() - started >= 2
    assert db.row(job_id) is None
    retries = [e for e in logs if e["event"] == "db.retrying"]
    # The success's DELETE rides with the next reserve where it can (one commit per job), so
    # it is retried as part of that unit of work, or alone when nothing else was claimed.
    assert retries and retries[0]["op"] in ("reserve", "delete")
    assert not [e for e in logs if e["event"] in ("job.failed", "job.rescheduled")]


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_unreachable_database_at_start_is_one_clear_error(backend: str) -> None:
    from dj_consumer.errors import ConfigError

    url = {"mariadb": "mysql+pymysql://root@127.0.0.1:1/test",
           "postgresql": "postgresql+psycopg://postgres@127.0.0.1:1/test"}[backend]
    reg = Registry()
    reg.run("J")(lambda j: None)
    with pytest.raises(ConfigError, match="cannot reach the database at"):
        make_worker({"database_url": url}, reg).work_off()
