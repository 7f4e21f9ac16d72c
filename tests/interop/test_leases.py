"""Lease renewal beside Ruby (SPEC §5): shorter recovery for our rows, never for Ruby's.

A Python worker with lock_timeout < max_run_time renews locked_at every heartbeat and takes
over rows of a *renewing* worker whose lock is older than lock_timeout. Ruby's locks never
renew, so a live Ruby job must keep Ruby's full max_run_time horizon, whatever the Ruby
worker is called; and our renewals must keep a Ruby worker with a short max_run_time off a
live Python job.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.interop.conftest import Interop
from tests.interop.helpers import py_env, spawn_py_worker, tail, wait_for

pytestmark = [pytest.mark.ruby, pytest.mark.slow]

LEASE = {"DJ_LOCK_TIMEOUT": "2", "DJ_HEARTBEAT_INTERVAL": "0.5"}



def job(key: str, seconds: float) -> dict[str, object]:
    return {"kind": "struct", "class": "SharedJob", "args": {"key": key, "seconds": seconds},
            "queue": "shared"}


def ruby_started(interop: Interop, key: str) -> bool:
    return any(r.job_key == key and r.runner == "ruby" for r in interop.runs.performed())


@pytest.mark.parametrize("ruby_name", ["rb", "pyramid"])
def test_a_live_ruby_lock_keeps_rubys_horizon(
    interop: Interop, procs: list[subprocess.Popen[bytes]], ruby_name: str
) -> None:
    """A Ruby job running longer than our lock_timeout is not taken over by a Python worker.

    "pyramid": a Ruby worker whose name merely starts with our worker_id ("py") must not
    look like a lease-renewing Python worker.
    """
    interop.ruby.enqueue([job("long", 6.0)])
    rb_log, py_log = interop.tmp_path / "rb.log", interop.tmp_path / "py.log"
    rb = interop.ruby.spawn_worker(rb_log, queues=["shared"], name_prefix=ruby_name,
                                   exit_on_complete=True, max_run_time=60)
    procs.append(rb)
    wait_for(lambda: ruby_started(interop, "long"), timeout=20, what="Ruby to start the job")
    py = spawn_py_worker(interop.url, interop.table, py_log, worker_id="py", max_run_time=60,
                         exit_on_complete=False, env=py_env(interop.url, interop.table, **LEASE))
    procs.append(py)
    assert rb.wait(timeout=30) == 0, tail(rb_log)
    py.send_signal(signal.SIGTERM)
    assert py.wait(timeout=15) == 0, tail(py_log)
    runs = [(r.runner, r.worker.split(" ")[0] if r.worker else None)
            for r in interop.runs.performed()]
    assert runs == [("ruby", ruby_name)], f"a live Ruby job was taken over: {runs}"
    assert interop.db.count() == 0


def test_our_lease_keeps_a_short_horizon_ruby_worker_off_a_live_job(
    interop: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Heartbeats every 0.5 s keep locked_at fresher than a Ruby max_run_time of 3 s."""
    interop.ruby.enqueue([job("long", 6.0)])
    rb_log, py_log = interop.tmp_path / "rb.log", interop.tmp_path / "py.log"
    py = spawn_py_worker(interop.url, interop.table, py_log, worker_id="py", max_run_time=60,
                         exit_on_complete=True, env=py_env(interop.url, interop.table, **LEASE))
    procs.append(py)
    wait_for(lambda: interop.runs.performed(), timeout=20, what="Python to start the job")
    rb = interop.ruby.spawn_worker(rb_log, queues=["shared"], name_prefix="rb",
                                   exit_on_complete=False, max_run_time=3)
    procs.append(rb)
    assert py.wait(timeout=30) == 0, tail(py_log)
    rb.send_signal(signal.SIGTERM)
    assert rb.wait(timeout=15) == 0, tail(rb_log)
    assert [(r.job_key, r.runner, r.note) for r in interop.runs.all()] == [
        ("long", "python", None), ("long", "python", "done")]
    assert interop.db.count() == 0


def test_a_crashed_python_lease_comes_back_after_lock_timeout_not_max_run_time(
    interop: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9 a renewing worker: a Python worker takes the row after ~lock_timeout (2 s),
    while a Ruby worker (max_run_time 60 s) correctly leaves it alone."""
    (job_id,) = interop.ruby.enqueue([job("victim", 2.5)])
    logs = {n: interop.tmp_path / f"{n}.log" for n in ("victim", "rescuer", "rb")}
    env = py_env(interop.url, interop.table, **LEASE)
    victim = spawn_py_worker(interop.url, interop.table, logs["victim"], worker_id="py",
                             max_run_time=60, exit_on_complete=False, env=env)
    procs.append(victim)
    wait_for(lambda: interop.runs.performed(), timeout=20, what="the victim to start the job")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    locked_at = interop.db.row(job_id).locked_at
    rb = interop.ruby.spawn_worker(logs["rb"], queues=["shared"], name_prefix="rb",
                                   exit_on_complete=False, max_run_time=60)
    rescuer = spawn_py_worker(interop.url, interop.table, logs["rescuer"], worker_id="py",
                              max_run_time=60, exit_on_complete=False, env=env)
    procs += [rb, rescuer]
    wait_for(lambda: interop.db.count() == 0, timeout=30, interval=0.2,
             what=f"the Python rescuer to take the job over\n{tail(logs['rescuer'])}")
    for proc in (rb, rescuer):
        proc.send_signal(signal.SIGTERM)
    assert rb.wait(timeout=15) == 0 and rescuer.wait(timeout=15) == 0
    first, second = interop.runs.performed()
    assert first.runner == second.runner == "python" and first.worker != second.worker
    assert second.created_at is not None and locked_at is not None
    took = (second.created_at - locked_at).total_seconds()
    assert 2 <= took < 30, f"taken over {took:.1f}s after the last lock renewal"
