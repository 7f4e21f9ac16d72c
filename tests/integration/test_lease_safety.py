"""Issue 12, suspected items: a lease must never let a peer take a live job.

- A renewal stuck on a half-open connection (no driver timeout) or a long outage: the job is
  told to stop (timed_out, job.lease_at_risk) before lock_timeout runs out; MySQL's driver
  read_timeout lets the renewal go on on a fresh connection.
- A handler that ignores timed_out and hangs: renewal stops at max_run_time plus one
  heartbeat, so its row comes back (it used to be renewed for ever).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from dj_consumer import Job, Registry, make_worker
from dj_consumer import engine as dbmod
from tests.conftest import DB
from tests.faults import Faults, Proxy
from tests.integration.test_protocol import obj

RENEW = r"SET locked_at = [^,]+ WHERE id"  # the renewal, not the claim (locked_at, locked_by)


def test_a_stuck_renewal_tells_the_job_to_stop_before_a_peer_may_take_it(db: DB) -> None:
    reg, seen = Registry(), {}
    unblock = threading.Event()

    @reg.run("J")
    def work(j: Job) -> None:
        started = time.monotonic()
        seen["stopped"] = j.timed_out.wait(20)
        seen["after"] = time.monotonic() - started

    job_id = db.insert(obj("J"))
    w = make_worker(db.config(lock_timeout=6, heartbeat_interval=0.5), reg)
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    # The heartbeat's connection hangs (a half-open socket, a long outage): renewals never return.
    faults.add(RENEW, lambda: unblock.wait(30), times=1,
               when=lambda: threading.current_thread().name == "dj-heartbeat")
    try:
        with capture_logs() as logs:
            assert w.work_off(1) == (0, 1)
    finally:
        unblock.set()
        w.close()
    assert seen["stopped"], "timed_out was never set: a peer could take the live job"
    assert seen["after"] < 6, "told too late: the lease had expired already"
    assert [e for e in logs if e["event"] == "job.lease_at_risk"]
    row = db.row(job_id)
    assert (row.attempts, row.locked_by) == (1, None)  # still ours: the attempt was written
    assert row.last_error.startswith("dj_consumer.errors.JobTimeout: stopped before max_run_time: the lock could not be renewed")


def test_a_hung_handler_stops_being_renewed_and_its_row_comes_back(db: DB) -> None:
    reg, peer_reg = Registry(), Registry()
    release, started = threading.Event(), threading.Event()
    peer_ran: list[int] = []

    @reg.run("J", max_run_time=1)
    def hangs(j: Job) -> None:
        started.set()
        release.wait(30)  # ignores timed_out

    peer_reg.run("J")(lambda j: peer_ran.append(j.id))
    job_id = db.insert(obj("J"))
    cfg: dict[str, Any] = {"lock_timeout": 3, "heartbeat_interval": 0.3}
    w = make_worker(db.config(**cfg), reg)
    peer = make_worker(db.config(worker_id="peer", lease_worker_ids=["pytest"], **cfg), peer_reg)
    thread = threading.Thread(target=w.work_off, args=(1,), daemon=True)
    try:
        with capture_logs() as logs:
            thread.start()
            assert started.wait(20)
            deadline = time.monotonic() + 25
            while not peer_ran and time.monotonic() < deadline:
                peer.work_off(1)
                time.sleep(0.2)
            release.set()
            thread.join(20)
    finally:
        release.set()
        w.close()
        peer.close()
    assert peer_ran == [job_id], "the hung job's lock was renewed for ever"
    stopped = [e for e in logs if e["event"] == "job.renewal_stopped"]
    assert stopped and stopped[0]["max_run_time"] == 1
    assert db.row(job_id) is None  # the peer's success; the hung attempt wrote nothing over it


def test_mysql_renewal_survives_a_half_open_connection(mariadb_db: DB, monkeypatch: Any) -> None:
    """Without a driver read_timeout the heartbeat waited for ever on the frozen socket."""
    db = mariadb_db
    monkeypatch.setattr(dbmod, "MIN_IO_TIMEOUT", 1.0)
    url = make_url(db.url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 3306)
    reg, seen = Registry(), {}
    frozen = threading.Event()

    @reg.run("J")
    def work(j: Job) -> None:
        time.sleep(1.0)
        proxy.freeze()  # every connection the worker has now goes half-open
        frozen.set()
        seen["frozen_at"] = _locked_at(db, j.id)
        time.sleep(6.0)
        seen["later"] = _locked_at(db, j.id)
        seen["timed_out"] = bool(j.timed_out)

    db.insert(obj("J"))
    w = make_worker(dict(db.config(lock_timeout=4, heartbeat_interval=0.5),
                         database_url=url.set(port=proxy.port).render_as_string(False)), reg)
    try:
        assert w.work_off(1) == (1, 0)
    finally:
        w.close()
        proxy.close()
    assert frozen.is_set()
    assert seen["later"] > seen["frozen_at"], "the renewal hung on the half-open connection"
    assert not seen["timed_out"]


def test_postgresql_connections_carry_keepalives_and_statement_limits(server_db: DB) -> None:
    """libpq has no read timeout: keepalives and tcp_user_timeout find a dead peer, and no
    statement of ours waits for ever on the server (its default)."""
    db = server_db
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(db.config(), reg)
    try:
        w.work_off()
        with w.store.db.connection() as conn:
            dbapi = conn.connection.dbapi_connection
            if db.backend == "postgresql":
                params = dbapi.info.get_parameters()
                assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) > 0
                for name in ("lock_timeout", "statement_timeout"):
                    assert conn.execute(sa.text(f"SHOW {name}")).scalar() not in ("0", None)
            else:
                assert dbapi._read_timeout and dbapi._write_timeout
                wait = conn.execute(sa.text("SELECT @@innodb_lock_wait_timeout")).scalar()
                assert wait < dbapi._read_timeout
    finally:
        w.close()


def _locked_at(db: DB, job_id: int) -> Any:
    return db.row(job_id).locked_at
