"""Issue 12 item 6: a lease is ours only when locked_by names it byte for byte.

MySQL compares text by the column's collation (case- and accent-insensitive), SQLite's LIKE
ignores ASCII case: `PY host:…`, `Py:0 host:…` and `pý host:…` are not worker `py`'s leases,
and a row locked by our own name in other letters is not ours.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest

import dj_consumer.config as config_module
from dj_consumer import Job, Registry, make_worker
from dj_consumer.clock import SystemClock
from tests.conftest import DB
from tests.integration.test_protocol import obj


def test_only_an_exact_lease_holder_loses_its_rows_after_lock_timeout(db: DB) -> None:
    reg = Registry()
    ran: list[str] = []
    reg.run("J")(lambda j: ran.append(j.payload["who"]))
    w = make_worker(db.config(worker_id="py", lock_timeout=300, heartbeat_interval=60), reg)
    ten_minutes_ago = SystemClock().now().replace(microsecond=0) - timedelta(minutes=10)
    others = {}
    for who, locked_by in [("upper", "PY host:x pid:1"), ("mixed_slot", "Py:0 host:x pid:1"),
                           ("accent", "pý host:x pid:1"), ("upper_host", "py HOST:x PID:1")]:
        others[who] = db.insert(obj("J", who=who), locked_by=locked_by, locked_at=ten_minutes_ago)
    # Our own name, in other letters, locked just now: not ours either.
    now = SystemClock().now().replace(microsecond=0)
    others["me_upper"] = db.insert(obj("J", who="me_upper"), locked_by=w.names[0].upper(),
                                   locked_at=now)
    crashed = db.insert(obj("J", who="crashed"), locked_by="py:3 host:gone pid:9",
                        locked_at=ten_minutes_ago)
    assert w.work_off() == (1, 0)
    assert ran == ["crashed"]
    assert db.row(crashed) is None
    for who, job_id in others.items():
        assert db.row(job_id).locked_by is not None, f"{who}'s live lock was taken"
    w.close()


def test_a_worker_id_with_glob_or_like_characters_matches_only_itself(db: DB) -> None:
    reg = Registry()
    ran: list[str] = []
    reg.run("J")(lambda j: ran.append(j.payload["who"]))
    w = make_worker(db.config(worker_id="py_[1]*", lock_timeout=300, heartbeat_interval=60), reg)
    ten_minutes_ago = SystemClock().now().replace(microsecond=0) - timedelta(minutes=10)
    mine = db.insert(obj("J", who="mine"), locked_by="py_[1]*:2 host:gone pid:9",
                     locked_at=ten_minutes_ago)
    other = db.insert(obj("J", who="other"), locked_by="pyx1zz:2 host:gone pid:9",
                      locked_at=ten_minutes_ago)
    assert w.work_off() == (1, 0)
    assert ran == ["mine"] and db.row(mine) is None
    assert db.row(other).locked_by == "pyx1zz:2 host:gone pid:9"
    w.close()


# -- leases across deployments: clocks and settings (issue 12, "strongly suspected") -----------


class SkewedClock(SystemClock):
    """This host's clock, off by `skew` (wall time only: timers still run in real time)."""

    def __init__(self, skew: timedelta) -> None:
        self.skew = skew

    def now(self) -> datetime:
        return super().now() + self.skew


def test_a_peer_whose_clock_runs_ahead_does_not_take_a_fresh_lease(server_db: DB) -> None:
    """A lease renewed just now is live, whatever the taking worker's own clock says."""
    db = server_db
    reg = Registry()
    reg.run("J")(lambda j: None)
    job_id = db.insert(obj("J"), run_at=SystemClock().now() - timedelta(hours=1),
                       locked_by="py:1 host:a pid:1", locked_at=SystemClock().now())
    ahead = make_worker(db.config(worker_id="py", lock_timeout=300, heartbeat_interval=60), reg,
                        clock=SkewedClock(timedelta(minutes=10)))
    assert ahead.work_off() == (0, 0)
    assert db.row(job_id).locked_by == "py:1 host:a pid:1"
    ahead.close()


def test_renewals_keep_a_lease_live_for_peers_whatever_the_owners_clock(server_db: DB) -> None:
    """The owner's clock is 10 minutes behind: its renewals must still read as fresh to a
    peer with a right clock (the lease is judged by the database's clock)."""
    db = server_db
    reg_owner, reg_peer = Registry(), Registry()
    runs: list[str] = []
    proceed = threading.Event()

    def long(j: Job) -> None:
        runs.append("owner")
        proceed.wait(30)

    reg_owner.run("J")(long)
    reg_peer.run("J")(lambda j: runs.append("peer"))
    db.insert(obj("J"), run_at=SystemClock().now() - timedelta(hours=1))
    behind = make_worker(db.config(worker_id="py", lock_timeout=300, heartbeat_interval=0.2,
                                   hostname="owner"),
                         reg_owner, clock=SkewedClock(timedelta(minutes=-10)))
    owner = threading.Thread(target=behind.work_off)
    owner.start()
    peer = make_worker(db.config(worker_id="py", lock_timeout=300, heartbeat_interval=60,
                                 hostname="peer"), reg_peer)
    try:
        deadline = time.monotonic() + 30
        while runs != ["owner"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # several renewals
        assert peer.work_off() == (0, 0)
    finally:
        proceed.set()
        owner.join(30)
        behind.close()
        peer.close()
    assert runs == ["owner"]


def test_peers_with_other_heartbeat_settings_never_take_a_live_lease(
        db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployment A renews at its own pace (heartbeat_interval 4 s, lock_timeout 20 s);
    deployment B, same worker_id, recovers leases after 2 s. Every renewing worker renews at
    least every LEASE_RENEW_MAX (here 0.5 s, scaled down from 60 s with the lock_timeouts),
    so B never takes A's live job."""
    monkeypatch.setattr(config_module, "LEASE_RENEW_MAX", 0.5)
    reg_a, reg_b = Registry(), Registry()
    runs: list[str] = []

    def slow(j: Job) -> None:
        runs.append("a")
        time.sleep(3.5)

    reg_a.run("J")(slow)
    reg_b.run("J")(lambda j: runs.append("b"))
    db.insert(obj("J"), run_at=SystemClock().now() - timedelta(hours=1))
    a = make_worker(db.config(worker_id="py", lock_timeout=20, heartbeat_interval=4,
                              hostname="a"), reg_a)
    b = make_worker(db.config(worker_id="py", lock_timeout=2, heartbeat_interval=0.5,
                              hostname="b"), reg_b)
    owner = threading.Thread(target=a.work_off)
    owner.start()
    try:
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:
            time.sleep(0.02)
        while owner.is_alive() and time.monotonic() < deadline:
            b.work_off()
            time.sleep(0.1)
    finally:
        owner.join(30)
        a.close()
        b.close()
    assert runs == ["a"], f"a live job was taken over by a peer: {runs}"


# -- a supervisor's children: "{worker_id}.{k}[:{slot}] host:… pid:…" (issue 19) ---------------


def test_a_crashed_childs_lease_is_recovered_and_look_alikes_are_not(db: DB) -> None:
    """Child k of worker `py` locks as "py.k[:slot] host:…": its stale lease comes back after
    lock_timeout; ids that only look like a child (not digits, other letters, a longer
    prefix) keep their locks for max_run_time, as Ruby's would."""
    reg = Registry()
    ran: list[str] = []
    reg.run("J")(lambda j: ran.append(j.payload["who"]))
    w = make_worker(db.config(worker_id="py", lock_timeout=300, heartbeat_interval=60), reg)
    ten_minutes_ago = SystemClock().now().replace(microsecond=0) - timedelta(minutes=10)
    children = {who: db.insert(obj("J", who=who), locked_by=locked_by, locked_at=ten_minutes_ago)
                for who, locked_by in [("child", "py.0 host:gone pid:9"),
                                       ("child_slot", "py.12:3 host:gone pid:9"),
                                       ("child_999", "py.999:0 host:gone pid:9")]}
    others = {who: db.insert(obj("J", who=who), locked_by=locked_by, locked_at=ten_minutes_ago)
              for who, locked_by in [("letters", "py.x host:gone pid:9"),
                                     ("mixed", "py.1x:0 host:gone pid:9"),
                                     ("upper", "PY.1 host:gone pid:9"),
                                     ("longer", "pyx.1 host:gone pid:9"),
                                     ("nested", "py.1.2 host:gone pid:9"),
                                     ("no_host", "py.1 gone pid:9"),
                                     ("ruby", "delayed_job.1 host:gone pid:9")]}
    assert w.work_off() == (3, 0)
    assert sorted(ran) == sorted(children)
    for who, job_id in others.items():
        assert db.row(job_id).locked_by is not None, f"{who}'s live lock was taken"
    w.close()


def test_children_keep_the_supervisors_lease_ids(db: DB) -> None:
    """A child (worker_id py.1) recovers its sibling's lease (py.0:…) and a lone `py`'s."""
    from dj_consumer.child import child_config
    from dj_consumer.config import Config

    reg = Registry()
    ran: list[str] = []
    reg.run("J")(lambda j: ran.append(j.payload["who"]))
    cfg = child_config(Config.from_mapping(db.config(worker_id="py", lock_timeout=300,
                                                     heartbeat_interval=60)), 1)
    assert cfg.worker_id == "py.1" and cfg.lease_ids == ("py",)
    w = make_worker(cfg, reg)
    assert w.names == [f"py.1 host:{cfg.hostname} pid:{__import__('os').getpid()}"]
    ten_minutes_ago = SystemClock().now().replace(microsecond=0) - timedelta(minutes=10)
    db.insert(obj("J", who="sibling"), locked_by="py.0:1 host:gone pid:9", locked_at=ten_minutes_ago)
    db.insert(obj("J", who="lone"), locked_by="py host:gone pid:9", locked_at=ten_minutes_ago)
    assert w.work_off() == (2, 0)
    assert sorted(ran) == ["lone", "sibling"]
    w.close()


@pytest.mark.parametrize(("locked_by", "holder"), [
    ("py host:a pid:1", True), ("py:3 host:a pid:1", True), ("py.0 host:a pid:1", True),
    ("py.12:3 host:a pid:1", True), ("py.x host:a pid:1", False), ("py.1x host:a pid:1", False),
    ("PY.1 host:a pid:1", False), ("pyx.1 host:a pid:1", False), ("py.1.2 host:a pid:1", False),
    ("py.1", False), ("py.\u0661 host:a pid:1", False),  # an Arabic-Indic one
])
def test_is_lease_holder_knows_children(locked_by: str, holder: bool) -> None:
    from dj_consumer.config import Config

    cfg = Config(database_url="sqlite://", worker_id="py")
    assert cfg.is_lease_holder(locked_by) is holder
