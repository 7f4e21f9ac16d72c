"""The expected state: what Ruby's rules (delayed_job 4.1.9's Worker#run / #reschedule /
#failed) make of each recorded run, and the invariants every schedule is checked against.

A violation names its invariant and, when it is a known case of a defect listed in issue #12,
that defect's number (blame.py; test_model.XFAIL_DEFECTS says which are still expected).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dj_consumer.errors import JobTimeout, exception_class
from tests.model.blame import SLACK, blame_crash, blame_rerun, blame_stuck, returns
from tests.model.driver import Played
from tests.model.jobs import RUN_TIME, key_of
from tests.model.schedule import OURS

#: last_error's first line for an attempt that ran past max_run_time: the class, as for every
#: error we write (docs/handlers.md "Errors"), then Ruby's Delayed::WorkerTimeout words.
TIMEOUT = f"{exception_class(JobTimeout.after(RUN_TIME))}: {JobTimeout.after(RUN_TIME)}"
NEVER_TOUCHED = ("bulk", "lookalike", "ruby", "failed")
#: A job: its row id and its key (SQLite hands a deleted row's id to the next insert).
Ident = tuple[int, int]


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str
    defect: str | None = None  # issue #12's defect number, when this is a known case of it

    def __str__(self) -> str:
        tag = f" (#{self.defect})" if self.defect else ""
        return f"{self.invariant}{tag}: {self.detail}"


@dataclass
class Run:
    """One run of one row, as its handler recorded it."""

    run: str
    id: int
    key: int
    name: str
    attempt: int
    by: str
    action: str
    run_at: str | None
    t0: float
    t1: float | None = None  # None: it never returned (killed, or still hanging)
    timed_out: bool = False
    error: str | None = None
    error_type: str | None = None
    error_class: str | None = None
    now: str | None = None

    @property
    def worker(self) -> str:
        return self.by.split(" ", 1)[0].split(":", 1)[0]


@dataclass(frozen=True)
class Result:
    """Ruby's verdict on a run: success (delete), retry (attempts + 1, reschedule) or failed."""

    kind: str
    attempts: int
    message: str | None = None


def ruby_result(run: Run, max_attempts: int) -> Result:
    if run.t1 is None:
        return Result("unfinished", run.attempt)
    # last_error's first line: Ruby's rules, with the class named first (`ValueError: …`).
    error = f"{run.error_class}: {run.error}" if run.error_type else None
    if run.error_type == "FailJob":
        return Result("failed", run.attempt + 1, error)
    message = error if run.error_type else (TIMEOUT if run.timed_out else None)
    if message is None:
        return Result("success", run.attempt)
    if run.attempt + 1 >= max_attempts:
        return Result("failed", run.attempt + 1, message)
    return Result("retry", run.attempt + 1, message)


def ruby_run_at(now: datetime, attempts: int) -> datetime:
    """Delayed::Backend::Base#reschedule_at: now + attempts**4 + 5 seconds."""
    return now + timedelta(seconds=attempts**4 + 5)


def runs_of(events: list[dict[str, Any]]) -> dict[Ident, list[Run]]:
    """Every run by job, in the order they started."""
    runs: dict[str, Run] = {}
    for e in events:
        if e["ev"] == "run_start":
            runs[e["run"]] = Run(e["run"], e["id"], e["key"], e["name"], e["attempt"], e["by"],
                                 e["action"], e["run_at"], e["t"])
        elif e["ev"] == "run_end" and e["run"] in runs:
            r = runs[e["run"]]
            r.t1, r.timed_out, r.now = e["t"], e["timed_out"], e["now"]
            r.error, r.error_type, r.error_class = e["error"], e["error_type"], e["error_class"]
    by_job: dict[Ident, list[Run]] = defaultdict(list)
    for r in sorted(runs.values(), key=lambda r: r.t0):
        by_job[(r.id, r.key)].append(r)
    return by_job


def check(p: Played) -> list[Violation]:
    runs = runs_of(p.events)
    return [*_untouched(p, runs), *_locks_after_stop(p), *_after_return(p, runs),
            *_enqueued_once(p, runs), *_problems(p, runs), *_histories(p, runs)]


def _untouched(p: Played, runs: dict[Ident, list[Run]]) -> list[Violation]:
    """No row we cannot run (look-alikes, Ruby's, failed ones) is ever written or run."""
    out = []
    for job_id, kind in p.kinds.items():
        if kind not in NEVER_TOUCHED:
            continue
        for when, rows in (("after the storm", p.after_storm), ("after the drain", p.final)):
            before, after = p.before.get(job_id) or {}, rows.get(job_id) or {}
            if before != after:
                changed = sorted(k for k in before if after.get(k) != before.get(k))
                out.append(Violation("untouchable_row_written",
                                     f"{kind} row {job_id} changed {when}: {changed}"))
                break
        if runs.get((job_id, p.keys[job_id])):
            out.append(Violation("untouchable_row_run", f"{kind} row {job_id} was run"))
    return out


def _locks_after_stop(p: Played) -> list[Violation]:
    """After every worker stopped, no row is locked by any of them (kill -9 excepted)."""
    hung = {m.split()[1] for m in p.problems if m.startswith("stop_hung")}
    names = {w.name for w in p.schedule.workers} - set(p.kills) - hung
    out = []
    for job_id, row in p.after_storm.items():
        holder = (row["locked_by"] or "").split(" ", 1)[0].split(":", 1)[0]
        if holder in names:
            crashed = any(e["ev"] == "start_raised" and e["worker"] == holder for e in p.events)
            blame = blame_crash(p, holder) if crashed else "1" if holder in p.interrupts else None
            out.append(Violation("locked_after_stop",
                                 f"row {job_id} still locked by {row['locked_by']!r} after its "
                                 "worker's start() returned", blame))
    return out


def _after_return(p: Played, runs: dict[Ident, list[Run]]) -> list[Violation]:
    """After start() returned, nothing of that worker reserves, runs or writes again."""
    out = [Violation("statement_after_return",
                     f"{e['worker']} sent a {e['stmt']} statement after its start() returned: "
                     f"{e['sql'][:80]!r}", "1")
           for e in p.events if e["ev"] == "after_return"]
    returned = returns(p)
    for rs in runs.values():
        for r in rs:
            if r.worker in returned and r.t0 > returned[r.worker]:
                out.append(Violation("run_after_return",
                                     f"{r.worker} started row {r.id} after its start() returned", "1"))
    return out


def _enqueued_once(p: Played, runs: dict[Ident, list[Run]]) -> list[Violation]:
    """An enqueue writes its row at most once, whatever happened to the reply."""
    keys = {e["key"] for e in p.events if e["ev"] == "enqueued"}
    ids: dict[int, set[int]] = defaultdict(set)
    for job_id, key in _jobs(p, runs):
        ids[key].add(job_id)
    return [Violation("enqueued_twice", f"enqueue of key {k} wrote rows {sorted(ids[k])}", "4")
            for k in sorted(keys) if len(ids[k]) > 1]


def _problems(p: Played, runs: dict[Ident, list[Run]]) -> list[Violation]:
    surrogate = any(r.action == "surrogate" for rs in runs.values() for r in rs)
    out = []
    for problem in p.problems:
        kind, _, detail = problem.partition(": ")
        blame = "3" if kind == "drain_raised" and surrogate else None
        out.append(Violation(kind, detail[:300], blame))
    for e in p.events:
        if e["ev"] == "start_raised":
            out.append(Violation("start_raised", f"{e['worker']}: {e['error']}",
                                 blame_crash(p, e["worker"], e["t"])))
    return out


def _jobs(p: Played, runs: dict[Ident, list[Run]]) -> set[Ident]:
    """Every job of ours: inserted, enqueued (seen in the table or run), or run."""
    untouchable = {(i, p.keys[i]) for i, k in p.kinds.items() if k in NEVER_TOUCHED}
    jobs = {(i, p.keys[i]) for i, k in p.kinds.items() if k in ("ours", "future")} | set(runs)
    for rows in (p.after_storm, p.final):
        for job_id, row in rows.items():
            key = key_of(row["handler"])
            if key is not None and (job_id, key) not in untouchable:
                jobs.add((job_id, key))
    return jobs


def _row(rows: dict[int, dict[str, Any]], job: Ident) -> dict[str, Any] | None:
    row = rows.get(job[0])
    return row if row is not None and key_of(row["handler"]) == job[1] else None


def _histories(p: Played, runs: dict[Ident, list[Run]]) -> list[Violation]:
    """Each row of ours: every run follows from the one before by Ruby's rules, and the row
    the drain leaves is what Ruby's rules give for its last run."""
    excuses: dict[int, list[float]] = defaultdict(list)
    for e in p.events:
        if e["ev"] == "interrupt_sql":
            for job_id in e["ids"]:
                excuses[job_id].append(e["t"])
    for t, ids in p.kills.values():
        for job_id in ids:
            excuses[job_id].append(t)
    returned = returns(p)
    out = []
    for job in sorted(_jobs(p, runs)):
        # A run that began after its worker's start() returned can write nothing (the tap
        # refuses that worker's statements); run_after_return reports it.
        rs = [r for r in runs.get(job, []) if not r.t0 > returned.get(r.worker, r.t0)]
        name = rs[0].name if rs else _name(p, job)
        out += _transitions(p, rs, OURS.get(name, 3), excuses[job[0]])
        out += _rescheduled(p, job, name, rs)
        out += _final(p, job, name, rs)
    return out


def _rescheduled(p: Played, job: Ident, name: str, rs: list[Run]) -> list[Violation]:
    """A row the storm left waiting after a failed attempt: attempts, last_error and run_at
    as Ruby's reschedule writes them."""
    row = _row(p.after_storm, job)
    storm = [r for r in rs if not r.by.startswith("drain ")]
    if row is None or not storm or row["locked_by"] or row["failed_at"]:
        return []
    last = storm[-1]
    res = ruby_result(last, OURS.get(name, 3))
    if res.kind != "retry" or row["attempts"] != res.attempts:
        return []  # not written (an interrupt, a crash): the drain's runs say whether excused
    where = f"row {job[0]} key {job[1]} after the storm"
    head = re.split(r"[\ud800-\udfff]", res.message or "")[0]
    out = []
    if not (row["last_error"] or "").startswith(head):
        out.append(Violation("reschedule_not_ruby", f"{where}: last_error "
                             f"{(row['last_error'] or '')[:60]!r}, Ruby's starts {head[:60]!r}"))
    fake = Run(**{**vars(last), "attempt": last.attempt + 1, "run_at": row["run_at"]})
    return out + _check_run_at(last, fake, where)


def _name(p: Played, job: Ident) -> str:
    row = _row(p.before, job) or _row(p.after_storm, job) or _row(p.final, job) or {}
    handler = row.get("handler", "")
    if "ModelMailer" in handler:
        return "ModelMailer.notify"
    return "ModelAJ" if "job_class: ModelAJ" in handler else "ModelJob"


def _transitions(p: Played, rs: list[Run], max_attempts: int,
                 excuses: list[float]) -> list[Violation]:
    out = []
    if rs and rs[0].attempt != 0:
        out.append(Violation("first_attempt", f"row {rs[0].id} first ran at attempts={rs[0].attempt}"))
    for prev, run in itertools.pairwise(rs):
        res = ruby_result(prev, max_attempts)
        where = f"row {run.id} key {run.key}: {prev.worker} ran attempt {prev.attempt} " \
                f"({prev.action}, {res.kind}), then {run.worker} ran attempt {run.attempt}"
        overlapped = prev.t1 is None or prev.t1 > run.t0 + SLACK
        # An interrupted worker abandons its handler; a killed one never finishes it.
        if overlapped and prev.worker not in p.interrupts and prev.worker not in p.kills:
            out.append(Violation("ran_twice_at_once", where))
        if run.attempt == prev.attempt:
            excuse = next((t for t in excuses if prev.t0 - SLACK <= t <= run.t0 + SLACK), None)
            if excuse is None:
                out.append(Violation("ran_again", where + " with attempts unchanged, and no crash "
                                     "or interrupt came between its run and its outcome",
                                     blame_rerun(p, prev, run)))
            else:
                excuses.remove(excuse)
                if run.run_at != prev.run_at:
                    out.append(Violation("run_at_moved", where + f": run_at {prev.run_at} -> "
                                         f"{run.run_at} although attempts did not change"))
        elif run.attempt == prev.attempt + 1 and res.kind == "retry":
            out += _check_run_at(prev, run, where)
        else:
            out.append(Violation("attempts_jump", where))
    return out


def _check_run_at(prev: Run, run: Run, where: str) -> list[Violation]:
    if prev.now is None or run.run_at is None:
        return []
    expected = ruby_run_at(datetime.fromisoformat(prev.now), prev.attempt + 1)
    off = (datetime.fromisoformat(run.run_at) - expected).total_seconds()
    # MySQL drops fractions (up to -1 s). The drain's fake clock stands still while it runs, so
    # the handler saw the worker's own `now`; in the storm the worker reads the clock a moment
    # after the handler returned.
    late = 0.001 if prev.by.startswith("drain ") else 0.75
    if -1.001 <= off <= late:
        return []
    return [Violation("reschedule_not_ruby", where + f": run_at {run.run_at}, Ruby's rule gives "
                      f"{expected} ({off:+.1f}s)")]


def _final(p: Played, job: Ident, name: str, rs: list[Run]) -> list[Violation]:
    job_id, row, last = job[0], _row(p.final, job), rs[-1] if rs else None
    res = ruby_result(last, OURS.get(name, 3)) if last else None
    if row is None:
        if res is None or res.kind != "success":
            return [Violation("deleted_without_success",
                              f"row {job_id} is gone; its last run was {res and res.kind}")]
        return []
    if row["failed_at"] is None:
        return [Violation("not_drained", f"row {job_id} ({name}) still waits after the quiet "
                          f"drain: attempts={row['attempts']} locked_by={row['locked_by']!r}, "
                          f"{len(rs)} runs", blame_stuck(p, row, last))]
    if res is None or res.kind != "failed":
        return [Violation("failed_without_failure",
                          f"row {job_id} has failed_at set; its last run was {res and res.kind}")]
    expected = {"attempts": res.attempts, "locked_by": None, "locked_at": None,
                "run_at": last.run_at if last else None}
    wrong = {k: (row[k], v) for k, v in expected.items() if row[k] != v}
    head = re.split(r"[\ud800-\udfff]", res.message or "")[0]
    if not (row["last_error"] or "").startswith(head):
        wrong["last_error"] = ((row["last_error"] or "")[:60], head[:60])
    if wrong:
        return [Violation("failed_row_not_ruby", f"row {job_id}: (got, Ruby) {wrong}")]
    return []
