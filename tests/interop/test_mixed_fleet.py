"""Two Ruby delayed_job workers and two dj_consumer processes drain one table together.

Ruby-only names (RubyOnlyJob, RubyMailer.deliver, RubyActiveJob) sit in the `ruby` queue,
Python-only names (PyOnlyJob, PyNotifier.notify, Greeter#greet, PyActiveJob) in `python`,
and SharedJob, which both sides can run, in `shared`. The Ruby workers run `--queues
ruby,shared` (a Ruby worker would fail a job whose class it does not have: the README's
advice to give Python jobs their own queue); the Python workers watch every queue, because
they only ever reserve names they have a handler for. Every job must run exactly once, by
the right side, and the table must end empty.

On MariaDB the Ruby workers use delayed_job_active_record's `reserve_sql_strategy =
:default_sql`: its default `UPDATE … ORDER BY priority, run_at LIMIT 1` deadlocks against the
`DELETE` of another *Ruby* worker (two Ruby workers alone, no Python, lose a job attempt to
`ActiveRecord::Deadlocked` every few hundred jobs here), which would blur what this test is
about. test_ruby_optimized_sql_deadlocks_stay_rubys_own runs that default beside us.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.interop.conftest import Interop
from tests.interop.helpers import (
    events_named,
    failed_tails,
    spawn_py_worker,
    tail,
    wait_all,
)

# 2,000 jobs: 800 Ruby-only, 950 Python-only, 250 both.
JOBS = [
    {"kind": "struct", "class": "SharedJob", "args": {"key": "sh-%{i}"}, "queue": "shared",
     "count": 250},
    {"kind": "struct", "class": "RubyOnlyJob", "args": {"key": "rb-struct-%{i}"}, "queue": "ruby",
     "count": 500},
    {"kind": "struct", "class": "PyOnlyJob", "args": {"key": "py-struct-%{i}"}, "queue": "python",
     "count": 500},
    {"kind": "delay_class", "class": "RubyMailer", "method": "deliver", "args": ["rb-mail-%{i}"],
     "queue": "ruby", "count": 150},
    {"kind": "delay_class", "class": "PyNotifier", "method": "notify", "args": ["py-notify-%{i}"],
     "queue": "python", "count": 150},
    {"kind": "delay_instance", "class": "Greeter", "new_args": ["py-greet-%{i}"], "method": "greet",
     "queue": "python", "count": 150},
    {"kind": "active_job", "class": "RubyActiveJob", "args": ["rb-aj-%{i}"], "count": 150},
    {"kind": "active_job", "class": "PyActiveJob", "args": ["py-aj-%{i}"], "count": 150},
]
TOTAL = sum(int(spec["count"]) for spec in JOBS)


def start_fleet(interop: Interop, procs: list[subprocess.Popen[bytes]], *,
                concurrency: tuple[int, int], strategy: str | None = None) -> list[Path]:
    """2 Ruby workers (queues ruby, shared) and 2 dj_consumer processes with `concurrency`
    slots each; their log files."""
    logs = [interop.tmp_path / f"{name}.log" for name in ("rb1", "rb2", "py1", "py2")]
    for i, log in enumerate(logs[:2]):
        procs.append(interop.ruby.spawn_worker(log, queues=["ruby", "shared"], name_prefix=f"rb{i + 1}",
                                               exit_on_complete=True, drain=True, strategy=strategy))
    for i, log in enumerate(logs[2:]):
        procs.append(spawn_py_worker(interop.url, interop.table, log, worker_id=f"py{i + 1}",
                                     concurrency=concurrency[i]))
    return logs



@pytest.mark.ruby
def test_ruby_and_python_workers_drain_one_table(
    interop: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    """One dj_consumer process with one slot, the other with four (slot threads), beside the
    two Ruby workers: both Python shapes in one drain."""
    concurrency = (1, 4)
    strategy = "default_sql" if interop.backend == "mariadb" else None
    started = time.monotonic()
    ids = interop.ruby.enqueue(JOBS)
    assert len(ids) == TOTAL
    enqueued = time.monotonic()

    logs = start_fleet(interop, procs, concurrency=concurrency, strategy=strategy)
    codes = wait_all(procs, timeout=150, logs=logs)
    drained = time.monotonic()
    assert codes == [0, 0, 0, 0], failed_tails(codes, logs)

    leftover = interop.db.rows()
    assert leftover == [], f"{len(leftover)} rows left, e.g. {leftover[:3]}"

    runs = interop.runs.performed()
    counts = Counter(r.job_key for r in runs)
    twice = {k: n for k, n in counts.items() if n != 1}
    assert not twice, f"jobs that ran more than once: {sorted(twice.items())[:10]}"
    assert len(counts) == TOTAL
    assert len({r.job_id for r in runs}) == TOTAL

    by_side: Counter[str] = Counter()
    for r in runs:
        side = r.job_key.split("-", 1)[0]
        by_side[f"{side}:{r.runner}"] += 1
        if side == "rb":
            assert r.runner == "ruby", r
        elif side == "py":
            assert r.runner == "python", r
        # the locked_by a worker held while the job ran is its own name
        assert r.worker is not None and r.worker.startswith("rb" if r.runner == "ruby" else "py"), r
    # SharedJob rows, runnable by both fleets from one queue, each ran once by one side. How
    # they split is timing (a fast Python fleet may take all of them), not a property to pin.
    shared = sum(1 for r in runs if r.job_key.startswith("sh-"))
    assert by_side["sh:ruby"] + by_side["sh:python"] == shared > 0, by_side

    for log in logs[2:]:
        assert not events_named(log, "job.failed"), tail(log)
        assert not events_named(log, "job.lock_lost"), tail(log)
        assert not events_named(log, "job.unparseable"), tail(log)
    slots = Counter(r.worker.split(" ")[0] for r in runs if r.runner == "python" and r.worker)
    assert any(name.startswith("py1") for name in slots), slots
    assert len([name for name in slots if name.startswith("py2:")]) > 1, slots  # slot threads
    print(f"\n{interop.backend} py -n{concurrency}: enqueue {enqueued - started:.1f}s, "
          f"drain {drained - enqueued:.1f}s, split {dict(by_side)}")


DEADLOCK_VICTIM = re.compile(r"\(id=(\d+)\).* FAILED .*Deadlock")


@pytest.mark.ruby
def test_ruby_optimized_sql_deadlocks_stay_rubys_own(
    interop_mariadb: Interop, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Ruby's default MySQL reservation beside us: whatever deadlocks it suffers stay Ruby's.

    delayed_job_active_record's `UPDATE … ORDER BY priority, run_at LIMIT 1` locks the index
    range it scans and deadlocks against a concurrent DELETE; Ruby turns that into a failed
    attempt of whatever job it was finishing (and may run that job again), even with no
    Python worker around. Beside us, those stay Ruby's: no Python job fails, runs twice or is
    touched by Ruby, and every anomaly is a job Ruby itself logged as a Deadlocked failure.
    """
    interop = interop_mariadb
    interop.ruby.enqueue(JOBS)
    logs = start_fleet(interop, procs, concurrency=(4, 4))
    codes = wait_all(procs, timeout=150, logs=logs)
    # A Ruby worker may even die of it: ClearLocks' UPDATE at exit can be the deadlock victim.
    assert codes[2:] == [0, 0], failed_tails(codes, logs)

    victims = {int(m.group(1)) for log in logs[:2]
               for m in DEADLOCK_VICTIM.finditer(log.read_text(errors="replace"))}
    runs = interop.runs.performed()
    counts = Counter(r.job_key for r in runs)
    for r in runs:
        if r.job_key.startswith("rb-"):
            assert r.runner == "ruby", r
        if r.job_key.startswith("py-"):
            assert r.runner == "python" and counts[r.job_key] == 1, r
        if counts[r.job_key] > 1:
            assert r.job_id in victims, f"{r} ran {counts[r.job_key]}x without a Ruby deadlock"
    py_keys = {k for k in counts if k.startswith("py-")}
    assert len(py_keys) == 950
    for row in interop.db.rows():
        assert row.id in victims or (row.locked_by or "").startswith("rb"), row
        assert "py" not in (row.locked_by or "")
    retried = 0
    for log in logs[2:]:
        for bad in ("job.failed", "job.rescheduled", "job.unparseable"):
            assert not events_named(log, bad), tail(log)
        retried += len(events_named(log, "db.retrying"))
    print(f"\nRuby optimized_sql beside us: {len(victims)} Ruby jobs lost an attempt to a "
          f"deadlock, {sum(n > 1 for n in counts.values())} ran twice (all Ruby's), "
          f"Ruby exit codes {codes[:2]}, our db.retrying {retried}x")
