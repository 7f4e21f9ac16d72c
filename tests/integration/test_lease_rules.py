"""Issue 12 item 6: a lease is ours only when locked_by names it byte for byte.

MySQL compares text by the column's collation (case- and accent-insensitive), SQLite's LIKE
ignores ASCII case: `PY host:…`, `Py:0 host:…` and `pý host:…` are not worker `py`'s leases,
and a row locked by our own name in other letters is not ours.
"""

from __future__ import annotations

from datetime import timedelta

from dj_consumer import Registry, make_worker
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
