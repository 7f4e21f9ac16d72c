"""Schedules: a seed becomes a bounded plan of rows, workers, injected faults and timed steps.

A schedule is plain data (JSON round-trip), a pure function of its seed, so a broken run is
replayed from the seed alone; a shrunk one from its JSON file (see test_model's docstring).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

#: Our handlers: dispatch name → max_attempts (tests/model/jobs.py registers them).
OURS = {"ModelJob": 3, "ModelAJ": 2, "ModelMailer.notify": 3}
#: Rows Python must never touch: names that our names prefix, a method name holding ours,
#: a job_class holding ours, and plain Ruby jobs.
LOOKALIKES = ("ModelJobArchive", "ModelMailer.notify_all", "ModelAJLegacy")
RUBY_ONLY = ("RubyOnlyJob", "Billing::Invoice")

#: What a handler does on each attempt (the last entry repeats): see jobs.act.
PLANS = (
    ("ok", 35), ("slow", 20), ("raise,ok", 10), ("raise", 5), ("fail", 5),
    ("timeout,ok", 8), ("hang,ok", 7), ("surrogate,ok", 1),
)
#: Fault kinds (faults.py) and the statement kinds they can hit (faults.classify).
FAULTS = ("lost_reply", "before", "non_db", "kill", "lock_wait")
#: Statement kinds and how often a fault aims at each (the common ones more often).
WRITE_POINTS = {"reserve": 4, "claim": 2, "delete": 4, "reschedule": 3, "fail": 2,
                "interrupt": 1, "unclaim": 1, "release": 2, "renew": 1, "commit": 1}
#: Look-alike rows put ahead of ours, in bulk (#2's trigger needs more than a scan reads).
BULKS = (0, 0, 0, 8, 20, 300)


@dataclass
class Fault:
    kind: str  # one of FAULTS
    at: str    # one of WRITE_POINTS, or "insert"
    nth: int   # fires on this worker's nth statement of that kind


@dataclass
class WorkerSpec:
    name: str   # worker_id: m0, m1, …
    mode: str   # thread | process
    batch: int  # reserve_batch
    concurrency: int
    shutdown_timeout: float | None
    faults: list[Fault] = field(default_factory=list)


@dataclass
class RowSpec:
    key: int
    kind: str  # ours | future | failed | lookalike | ruby
    name: str
    plan: str = "ok"
    priority: int = 0


@dataclass
class Step:
    at: float  # seconds after the workers started
    op: str    # stop | interrupt | kill | enqueue
    worker: int = -1
    key: int = -1
    plan: str = ""
    fault: Fault | None = None


@dataclass
class Schedule:
    seed: int
    rows: list[RowSpec]
    bulk: int  # look-alike rows ahead of every row of ours
    workers: list[WorkerSpec]
    steps: list[Step]
    storm: float  # seconds until every worker still running is stopped
    drain_batch: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)

        def fault(f: dict[str, Any] | None) -> Fault | None:
            return None if f is None else Fault(**f)

        workers = [WorkerSpec(**{**w, "faults": [Fault(**f) for f in w["faults"]]})
                   for w in data["workers"]]
        steps = [Step(**{**s, "fault": fault(s["fault"])}) for s in data["steps"]]
        return cls(seed=data["seed"], rows=[RowSpec(**r) for r in data["rows"]],
                   bulk=data["bulk"], workers=workers, steps=steps, storm=data["storm"],
                   drain_batch=data["drain_batch"])

    @classmethod
    def load(cls, path: Path) -> Schedule:
        return cls.from_json(path.read_text())

    def describe(self) -> str:
        """One line per worker and step: what a reader needs to see what happened when."""
        lines = [f"seed {self.seed}: {len(self.rows)} rows, {self.bulk} look-alikes ahead, "
                 f"storm {self.storm:g}s, drain batch {self.drain_batch}"]
        for w in self.workers:
            faults = ", ".join(f"{f.kind}@{f.at}#{f.nth}" for f in w.faults) or "no faults"
            lines.append(f"  {w.name}: {w.mode} batch={w.batch} concurrency={w.concurrency} "
                         f"shutdown_timeout={w.shutdown_timeout} {faults}")
        for s in self.steps:
            extra = f" {s.fault.kind}@{s.fault.at}" if s.fault else ""
            target = f" m{s.worker}" if s.worker >= 0 else f" key {s.key}"
            lines.append(f"  t={s.at:.2f}s {s.op}{target}{extra}")
        return "\n".join(lines)


def generate(seed: int) -> Schedule:
    """The schedule for `seed`: the same on every database, so runs compare across them."""
    rnd = random.Random(seed)
    rows = _rows(rnd)
    workers = [_worker(rnd, i) for i in range(rnd.randint(1, 3))]
    storm = round(rnd.uniform(3.0, 5.5), 2)
    steps = _steps(rnd, workers, storm, next_key=len(rows) + 1)
    batches = [w.batch for w in workers]
    return Schedule(seed=seed, rows=rows, bulk=rnd.choice(BULKS), workers=workers,
                    steps=steps, storm=storm, drain_batch=rnd.choice(batches))


def _plan(rnd: random.Random) -> str:
    plans, weights = zip(*PLANS, strict=True)
    plan: str = rnd.choices(plans, weights)[0]
    return plan


def _rows(rnd: random.Random) -> list[RowSpec]:
    rows: list[RowSpec] = []

    def add(kind: str, name: str, plan: str = "ok") -> None:
        rows.append(RowSpec(len(rows) + 1, kind, name, plan, rnd.randint(0, 3)))

    for _ in range(rnd.randint(10, 30)):
        add("ours", rnd.choice(list(OURS)), _plan(rnd))
    for _ in range(rnd.randint(0, 2)):
        add("future", rnd.choice(list(OURS)), _plan(rnd))
    for _ in range(rnd.randint(0, 2)):
        add("failed", rnd.choice(list(OURS)))
    for _ in range(rnd.randint(1, 4)):
        add("lookalike", rnd.choice(LOOKALIKES))
    for _ in range(rnd.randint(1, 3)):
        add("ruby", rnd.choice(RUBY_ONLY))
    rnd.shuffle(rows)
    return rows


def _worker(rnd: random.Random, i: int) -> WorkerSpec:
    points, weights = zip(*WRITE_POINTS.items(), strict=True)
    faults = [Fault(rnd.choice(FAULTS), rnd.choices(points, weights)[0], rnd.randint(1, 3))
              for _ in range(rnd.randint(0, 5))]
    return WorkerSpec(
        name=f"m{i}",
        mode=rnd.choice(("thread", "thread", "process")),
        batch=rnd.choice((1, 1, 2, 4)),
        concurrency=rnd.choice((1, 1, 2, 3)),
        shutdown_timeout=rnd.choice((None, None, 0.5, 1.5)),
        faults=faults,
    )


def _steps(rnd: random.Random, workers: list[WorkerSpec], storm: float,
           next_key: int) -> list[Step]:
    steps: list[Step] = []
    for i, w in enumerate(workers):
        roll = rnd.random()
        # A worker process needs about a second to start working.
        at = round(rnd.uniform(1.5 if w.mode == "process" else 0.5, storm), 2)
        if w.mode == "process" and roll < 0.3:
            steps.append(Step(at, "kill", worker=i))
        elif w.mode == "process" and roll < 0.6:
            steps.append(Step(at, "interrupt", worker=i))  # SIGTERM, then SIGTERM again
        elif roll < 0.5:
            steps.append(Step(at, "stop", worker=i))
    for _ in range(rnd.randint(0, 2)):
        fault = Fault(rnd.choice(("lost_reply", "before", "non_db")), "insert", 1)
        steps.append(Step(round(rnd.uniform(0.0, storm), 2), "enqueue", key=next_key,
                          plan=_plan(rnd), fault=fault if rnd.random() < 0.6 else None))
        next_key += 1
    return sorted(steps, key=lambda s: s.at)


def shrink_candidates(schedule: Schedule) -> list[Schedule]:
    """Smaller schedules to try when this one broke an invariant: one fault, step, worker or
    row fewer each (the first that still breaks the same invariant replaces it)."""
    out: list[Schedule] = []
    for i, w in enumerate(schedule.workers):
        for j in range(len(w.faults)):
            faults = w.faults[:j] + w.faults[j + 1:]
            workers = [*schedule.workers[:i], replace(w, faults=faults), *schedule.workers[i + 1:]]
            out.append(replace(schedule, workers=workers))
    for j in range(len(schedule.steps)):
        out.append(replace(schedule, steps=schedule.steps[:j] + schedule.steps[j + 1:]))
    if len(schedule.workers) > 1:
        last = len(schedule.workers) - 1
        steps = [s for s in schedule.steps if s.worker != last]
        out.append(replace(schedule, workers=schedule.workers[:last], steps=steps))
    if len(schedule.rows) > 4:
        half = len(schedule.rows) // 2
        out.append(replace(schedule, rows=schedule.rows[:half]))
        out.append(replace(schedule, rows=schedule.rows[half:]))
    return out
