"""Scenario `latency` (issue 18): how soon an idle worker starts a job a Rails app inserts.

An enqueuer does what Rails does, one plain INSERT per job (autocommit), at random gaps of
0.1-3 s (the same seeded sequence in every run); one job in four is scheduled a few whole
seconds ahead. Each worker is one idle process at its defaults (sleep_delay 5 s, Ruby's),
started before the first INSERT; every variant of one database runs at the same time, on a
table of its own, fed the same rows within a millisecond, so a burst of load hits all alike.

Measured: handler start - INSERT commit (ready jobs), handler start - run_at (scheduled
jobs), and before the first INSERT, the statements per second and the CPU an idle worker costs.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from benchmarks.env import Table, Target, scratch_dir
from benchmarks.report import Section, ms

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
GAPS = (0.1, 3.0)
SCHEDULED_EVERY = 4
#: Seconds of idle time measured before the first INSERT.
IDLE = 10.0


@dataclass
class Variant:
    """One worker under test: its table, process and stamps."""

    name: str
    ruby: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    setup: Any = None  # called with the Table before the worker starts (a trigger, say)
    teardown: Any = None  # called with the Table before it is dropped
    command: Any = None  # (Target, Variant) -> (argv, env): a worker other than ours or Ruby's
    handler: Any = None  # seq -> the handler its rows carry (default: StampJob)
    queue: str | None = None
    optional: bool = False  # a peer: if its process dies, its row says why; the others go on
    failed: str | None = None
    table: Table | None = None
    proc: subprocess.Popen[bytes] | None = None
    stamps: Path | None = None
    committed: dict[int, float] = field(default_factory=dict)
    run_at: dict[int, float] = field(default_factory=dict)


def _plan(jobs: int) -> list[tuple[float, int | None]]:
    """(gap before the INSERT, whole seconds ahead for a scheduled job or None)."""
    rng = random.Random(18)
    return [(rng.uniform(*GAPS), rng.choice((1, 2, 3)) if i % SCHEDULED_EVERY == SCHEDULED_EVERY - 1
             else None) for i in range(jobs)]


def _start(t: Target, v: Variant) -> None:
    assert v.table is not None
    v.stamps = scratch_dir() / f"{v.table.name}.stamps"
    v.stamps.write_text("")
    env = None
    if v.command is not None:
        cmd, env = v.command(t, v)
    elif v.ruby:
        cmd = ["ruby", str(HERE / "ruby_pickup.rb"), t.ruby_url, v.table.name, str(v.stamps)]
    else:
        args = {"url": t.url, "table": v.table.name, "stamps": str(v.stamps), "config": v.config}
        cmd = [sys.executable, "-m", "benchmarks.pickup_child", json.dumps(args)]
    v.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)


def _lines(v: Variant) -> list[list[str]]:
    assert v.stamps is not None
    return [line.split() for line in v.stamps.read_text().splitlines() if line.strip()]


def _wait(what: str, variants: list[Variant], done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(v.failed or done(v) for v in variants):
        for v in variants:
            assert v.proc is not None
            if v.failed is None and v.proc.poll() is not None:
                err = v.proc.stderr.read().decode() if v.proc.stderr else ""
                tail = err.strip().splitlines()
                if v.optional:
                    v.failed = (f"exited {v.proc.returncode} before {what}"
                                + (f": {tail[-1]}" if tail else ""))
                    continue
                raise RuntimeError(f"{v.name} exited {v.proc.returncode} before {what}:\n"
                                   + "\n".join(tail[-8:]))
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _insert(t: Target, conn: sa.Connection, v: Variant, table: sa.Table, seq: int,
            ahead: int | None) -> tuple[float, float]:
    """One Rails-style INSERT (autocommit): (commit time, run_at), wall-clock seconds."""
    now = datetime.now(UTC).replace(tzinfo=None)
    if t.backend == "mariadb":  # datetime(0): Rails writes whole seconds there
        now = now.replace(microsecond=0)
    run_at = now if ahead is None else now.replace(microsecond=0) + timedelta(seconds=ahead)
    conn.execute(sa.insert(table).values(
        handler=v.handler(seq) if v.handler else f"--- !ruby/object:StampJob\nseq: {seq}\n",
        queue=v.queue, priority=0, attempts=0, run_at=run_at, created_at=now, updated_at=now))
    committed = time.time()
    return committed, run_at.replace(tzinfo=UTC).timestamp()


def run(t: Target, variants: list[Variant], jobs: int, log: Any) -> None:
    plan = _plan(jobs)
    engines: list[sa.Engine] = []
    try:
        for v in variants:
            v.table = Table(t, "pickup")
            if v.setup is not None:
                v.setup(v.table)
            _start(t, v)
        _wait("ready", variants, lambda v: any(p[0] == "ready" for p in _lines(v)), 120)
        log(f"latency {t.backend}: idle {IDLE:.0f} s, then {jobs} INSERTs")
        time.sleep(IDLE + 1)
        conns = []
        for v in variants:
            assert v.table is not None
            engine = sa.create_engine(t.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            engines.append(engine)
            conns.append((v, engine.connect(), v.table.table))
        for seq, (gap, ahead) in enumerate(plan):
            time.sleep(gap)
            order = conns if seq % 2 == 0 else conns[::-1]
            for v, conn, table in order:
                if v.failed:
                    continue
                v.committed[seq], v.run_at[seq] = _insert(t, conn, v, table, seq, ahead)
                if ahead is None:
                    del v.run_at[seq]
        for _, conn, _ in conns:
            conn.close()
        _wait("every job", variants, lambda v: len(_ran(v)) >= jobs, 30)
    finally:
        for v in variants:
            if v.proc is not None and v.proc.poll() is None:
                v.proc.send_signal(signal.SIGTERM)
        for v in variants:
            if v.proc is not None:
                try:
                    v.proc.wait(30)
                except subprocess.TimeoutExpired:
                    v.proc.kill()
            if v.table is not None:
                if v.teardown is not None:
                    v.teardown(v.table)
                v.table.drop()
        for engine in engines:
            engine.dispose()


def _ran(v: Variant) -> dict[int, float]:
    return {int(p[0]): float(p[1]) for p in _lines(v) if p[0].isdigit()}


@dataclass
class Result:
    pickup: list[float]  # seconds, sorted
    scheduled: list[float]
    idle_qps: float
    idle_cpu: float  # share of one core


def result(v: Variant) -> Result:
    ran = _ran(v)
    pickup = sorted(ran[s] - c for s, c in v.committed.items() if s not in v.run_at and s in ran)
    scheduled = sorted(ran[s] - r for s, r in v.run_at.items() if s in ran)
    lines = _lines(v)
    ready = next(float(p[1]) for p in lines if p[0] == "ready")
    timeline = [(float(p[3]), int(p[1]), float(p[2])) for p in lines if p[0] == "q"]
    window = [q for q in timeline if ready + 0.5 <= q[0] <= ready + 0.5 + IDLE]
    (t0, n0, c0), (t1, n1, c1) = window[0], window[-1]
    return Result(pickup, scheduled, (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0))


def q(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def latency(ctx: Context) -> None:
    jobs = 24 if ctx.quick else 40
    s = Section(
        f"latency: {jobs} jobs INSERTed at random gaps of {GAPS[0]:g}-{GAPS[1]:g} s, one idle "
        "worker at its defaults (ms; idle: before the first INSERT)",
        ["database", "worker", "start-commit p50", "p95", "p99", "max",
         "start-run_at p50", "p99", "idle stmts/s", "idle CPU"])
    missing: str | None = None
    for t in ctx.on("sqlite", "mariadb", "postgresql"):
        variants = [Variant("dj")]
        if t.backend == "postgresql":
            variants.append(Variant("dj + notify", setup=_install_trigger))
        if ctx.ruby_missing is None:
            variants.append(Variant("ruby", ruby=True))
        if t.backend == "postgresql":
            from benchmarks.peer import pickup_variant

            peer, missing = pickup_variant(ctx.log)
            if peer is not None:
                variants.append(peer)
        ctx.log(f"latency {t.backend}")
        run(t, variants, jobs, ctx.log)
        for v in variants:
            if v.failed:
                s.add(t.backend, v.name, f"not run: {v.failed}", *["-"] * 7)
                continue
            r = result(v)
            s.add(t.backend, v.name, ms(q(r.pickup, 0.5)), ms(q(r.pickup, 0.95)),
                  ms(q(r.pickup, 0.99)), ms(r.pickup[-1]) if r.pickup else "-",
                  ms(q(r.scheduled, 0.5)), ms(q(r.scheduled, 0.99)),
                  f"{r.idle_qps:.1f}", f"{100 * r.idle_cpu:.1f}%")
            if v.name == ("dj + notify" if t.backend == "postgresql" else "dj"):
                _targets(ctx, t.backend, r)
        if missing:
            s.add(t.backend, "rubydj-pyworker", f"not run: {missing}", *["-"] * 7)
    s.note(f"start-commit: the handler's first line minus the moment the enqueuer's INSERT "
           f"returned (autocommit); start-run_at: for the 1 in {SCHEDULED_EVERY} jobs scheduled "
           "1-3 whole seconds ahead. With so few jobs, p95 and p99 are the worst ones")
    s.note("dj: idle_poll 0.1 s (the prober); dj + notify: PostgreSQL with `dj-consumer schema "
           "--notify`'s trigger, the worker LISTENing")
    s.note("idle stmts/s: statements the worker sent per second while nothing was ready (Python: "
           "driver executes; Ruby: ActiveRecord sql events); idle CPU: the worker process's own, "
           "in % of one core")
    s.note("rubydj-pyworker 1.2.1 (PostgreSQL only): its Worker.run() at its defaults "
           "(sleep_delay 10 s), on `user.delay.stamp` rows in queue 'default' (the only kind it "
           "runs), through a view named delayed_jobs; idle stmts/s counted at psycopg2's execute")
    s.note("ruby: Delayed::Worker#start at Ruby's defaults (sleep_delay 5 s), delayed_job 4.1.9 + "
           "delayed_job_active_record" if ctx.ruby_missing is None else f"ruby skipped: {ctx.ruby_missing}")
    ctx.report.sections.append(s)


def _install_trigger(table: Table) -> None:
    from dj_consumer import notify

    with table.engine.begin() as conn:
        for statement in notify.trigger_sql(table.name):
            conn.exec_driver_sql(statement)


def _targets(ctx: Context, backend: str, r: Result) -> None:
    p50, p99 = q(r.pickup, 0.5), q(r.pickup, 0.99)
    if backend == "mariadb":
        ctx.report.target("latency mariadb: p50 <= 100 ms, p99 <= 250 ms",
                          f"{ms(p50)} / {ms(p99)} ms", p50 <= 0.1 and p99 <= 0.25)
        ctx.report.target("latency mariadb: idle <= 15 statements/s, <= 2% of a core",
                          f"{r.idle_qps:.1f}/s, {100 * r.idle_cpu:.1f}%",
                          r.idle_qps <= 15 and r.idle_cpu <= 0.02)
    if backend == "postgresql":
        ctx.report.target("latency postgresql: p50 <= 20 ms, p99 <= 100 ms",
                          f"{ms(p50)} / {ms(p99)} ms", p50 <= 0.02 and p99 <= 0.1)
    if backend != "sqlite":
        sched = q(r.scheduled, 0.99)
        ctx.report.target(f"latency {backend}: scheduled start - run_at p99 <= 100 ms",
                          f"{ms(sched)} ms", sched <= 0.1)
