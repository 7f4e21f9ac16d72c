"""Plays one schedule against a real database: rows, workers (threads and processes) with
their fault taps, timed steps (stop, second SIGTERM, kill -9, enqueue), a stop of everyone
at the storm's end, then a quiet drain. Returns everything the model checks (model.py)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from dj_consumer import enqueue, schema
from dj_consumer.clock import FakeClock, SystemClock
from dj_consumer.config import Config
from dj_consumer.store import Store
from dj_consumer.worker import Worker
from tests.conftest import ROOT, clean_env
from tests.model import faults
from tests.model.faults import ScheduleOver
from tests.model.jobs import Trace, build_registry, read_trace
from tests.model.schedule import Schedule, Step, WorkerSpec
from tests.model.table import insert_rows, locked_by, snapshot, wait_for_room

STOP_WAIT = 45.0    # a stopped worker must have returned by then
DRAIN_ROUNDS = 8    # work_off calls of the quiet drain (its clock jumps a day each time)


@dataclass
class Played:
    """One schedule's run: the trace and the table at each checkpoint."""

    schedule: Schedule
    backend: str
    workdir: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)  # row id → RowSpec.kind ("bulk")
    keys: dict[int, int] = field(default_factory=dict)   # row id → key, as inserted
    before: dict[int, dict[str, Any]] = field(default_factory=dict)
    after_storm: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[int, dict[str, Any]] = field(default_factory=dict)
    kills: dict[str, tuple[float, list[int]]] = field(default_factory=dict)
    interrupts: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def base_config(url: str, table: str, spec: WorkerSpec | None = None, **more: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"database_url": url, "table_name": table, "sleep_delay": 0.1,
                           "heartbeat_interval": 0.5}
    if spec is not None:
        cfg.update(worker_id=spec.name, reserve_batch=spec.batch, concurrency=spec.concurrency,
                   shutdown_timeout=spec.shutdown_timeout)
    cfg.update(more)
    return cfg


class ThreadWorker:
    def __init__(self, spec: WorkerSpec, url: str, table: str, trace: Trace) -> None:
        self.spec, self.trace = spec, trace
        config = Config.from_mapping(base_config(url, table, spec))
        store = Store(config)
        self.tap = faults.install(store, faults.Tap(spec.name, spec.faults, trace,
                                                    backend=store.dialect, url=url, table=table))
        self.worker = Worker(config, build_registry(trace, SystemClock()), store=store)
        self.thread = threading.Thread(target=self._main, name=f"model-{spec.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            self.worker.start()
        except BaseException as exc:
            self.trace.emit("start_raised", worker=self.spec.name, error=repr(exc))
        finally:
            self.tap.close()
            self.trace.emit("returned", worker=self.spec.name)

    def stop(self) -> None:
        self.worker.stop()

    def wait(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.tap.close()
        self.worker.close()


class ProcessWorker:
    def __init__(self, spec: WorkerSpec, url: str, table: str, workdir: Path, trace: Trace) -> None:
        self.spec = spec
        path = workdir / f"{spec.name}.json"
        path.write_text(json.dumps({
            "config": base_config(url, table, spec), "url": url, "table": table,
            "faults": [vars(f) for f in spec.faults], "trace": str(trace.path),
            "log": str(workdir / f"{spec.name}.log")}))
        self.args = [sys.executable, "-m", "tests.model.child", str(path)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=clean_env())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def play(schedule: Schedule, backend: str, url: str, workdir: Path) -> Played:
    """Run `schedule` on a fresh table; the table is dropped afterwards."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    table = f"dj_model_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    wait_for_room(engine, backend)
    schema.create(engine, table)
    (workdir / "trace.jsonl").unlink(missing_ok=True)
    trace = Trace(workdir / "trace.jsonl")
    played = Played(schedule, backend, workdir)
    fleet: list[ThreadWorker | ProcessWorker] = []
    with _worker_logs(workdir / "threads.log"), _thread_deaths(played):
        try:
            played.kinds, played.keys = insert_rows(engine, table, schedule)
            played.before = snapshot(engine, table)
            for spec in schedule.workers:
                fleet.append(ThreadWorker(spec, url, table, trace) if spec.mode == "thread"
                             else ProcessWorker(spec, url, table, workdir, trace))
            for w in fleet:
                w.start()
            _storm(schedule, fleet, played, engine, table, url, trace)
            played.after_storm = snapshot(engine, table)
            played.problems += drain(schedule, url, table, trace)
            played.final = snapshot(engine, table)
        finally:
            for w in fleet:
                w.close()
            _let_abandoned_threads_end()
            trace.close()
            played.events = read_trace(trace.path)
            schema.delayed_jobs_table(table).drop(engine, checkfirst=True)
            engine.dispose()
    played.seconds = time.monotonic() - started
    return played


def _storm(schedule: Schedule, fleet: list[Any], played: Played, engine: sa.Engine,
           table: str, url: str, trace: Trace) -> None:
    t0 = time.monotonic()
    stopped: set[int] = set()
    for step in schedule.steps:
        time.sleep(max(0.0, t0 + step.at - time.monotonic()))
        _step(step, fleet, played, engine, table, url, trace, stopped)
    time.sleep(max(0.0, t0 + schedule.storm - time.monotonic()))
    now = time.time()
    for i, w in enumerate(fleet):
        if i not in stopped:
            w.stop()
            trace.emit("stop", worker=w.spec.name)
            if w.spec.shutdown_timeout is not None:
                played.interrupts[w.spec.name] = now + w.spec.shutdown_timeout
    deadline = time.monotonic() + STOP_WAIT
    for w in fleet:
        if not w.wait(max(0.1, deadline - time.monotonic())):
            played.problems.append(f"stop_hung: {w.spec.name} had not returned {STOP_WAIT:g}s "
                                   "after it was stopped")
            w.close()


def _step(step: Step, fleet: list[Any], played: Played, engine: sa.Engine, table: str,
          url: str, trace: Trace, stopped: set[int]) -> None:
    if step.op == "enqueue":
        _enqueue(step, url, table, trace)
        return
    w = fleet[step.worker]
    name = w.spec.name
    stopped.add(step.worker)
    trace.emit(step.op, worker=name)
    if step.op == "kill":
        w.signal(signal.SIGKILL)
        w.wait(10)
        played.kills[name] = (time.time(), locked_by(engine, table, name))
    elif step.op == "interrupt":
        w.stop()
        time.sleep(0.3)
        w.signal(signal.SIGTERM)
        played.interrupts[name] = time.time()
    else:
        w.stop()
        if w.spec.shutdown_timeout is not None:
            played.interrupts[name] = time.time() + w.spec.shutdown_timeout


def _enqueue(step: Step, url: str, table: str, trace: Trace) -> None:
    """Python's enqueue through a store with this step's fault at its INSERT."""
    config = Config.from_mapping(base_config(url, table))
    store = Store(config)
    faults.install(store, faults.Tap("enqueue", [step.fault] if step.fault else [], trace,
                                     backend=store.dialect, url=url, table=table))
    try:
        job_id = enqueue(config, "ModelJob", {"k": step.key, "plan": step.plan}, store=store)
        trace.emit("enqueued", key=step.key, id=job_id)
    except Exception as exc:
        trace.emit("enqueued", key=step.key, id=None, error=repr(exc))
    finally:
        store.close()


def drain(schedule: Schedule, url: str, table: str, trace: Trace) -> list[str]:
    """Faults over: one quiet worker whose clock is a day ahead (future rows, rescheduled rows
    and the locks of killed workers are all due) runs everything runnable."""
    clock = FakeClock(SystemClock().now() + timedelta(days=1))
    config = Config.from_mapping(base_config(url, table, worker_id="drain",
                                             reserve_batch=schedule.drain_batch))
    worker = Worker(config, build_registry(trace, clock, drain=True), clock=clock)
    problems = []
    try:
        for _ in range(DRAIN_ROUNDS):
            try:
                counts = worker.work_off(100)
            except Exception as exc:
                problems.append(f"drain_raised: work_off raised {exc!r}")
                counts = (0, -1)
            if counts == (0, 0):
                break
            clock.advance(86400)
    finally:
        worker.close()
    return problems


@contextlib.contextmanager
def _worker_logs(path: Path) -> Any:
    """The in-process workers' logs go to a file next to the trace, not to pytest's capture."""
    previous = structlog.get_config()
    with path.open("a") as out:
        structlog.configure(
            processors=[structlog.processors.add_log_level,
                        structlog.processors.TimeStamper("iso"),
                        structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
            logger_factory=structlog.WriteLoggerFactory(file=out))
        try:
            yield
        finally:
            structlog.configure(**previous)


_deaths: list[str] | None = None  # the playing schedule's problems, while it plays


@contextlib.contextmanager
def _thread_deaths(played: Played) -> Any:
    """A worker thread that dies of an exception is a finding. One ended by ScheduleOver is an
    abandoned slot ending at its next statement (the trace has it): it may end after its
    schedule, so the filter stays installed, passing every other death on (to pytest)."""
    global _deaths
    previous = threading.excepthook
    if not getattr(previous, "model_filter", False):
        def hook(args: Any, over: type = ScheduleOver) -> None:  # bound now: module
            if args.exc_type is not None and issubclass(args.exc_type, over):  # globals go
                return  # at interpreter exit, while abandoned daemon threads may still end
            if _deaths is None:
                previous(args)
                return
            name = args.thread.name if args.thread else "?"
            _deaths.append(f"thread_died: {name}: {args.exc_type.__name__}: {args.exc_value}")

        hook.model_filter = True  # type: ignore[attr-defined]
        threading.excepthook = hook
    _deaths = played.problems
    try:
        yield
    finally:
        _deaths = None


def _let_abandoned_threads_end(timeout: float = 12.0) -> None:
    """Slots abandoned by an interrupt end at their next statement (ScheduleOver) once their
    handler returns; wait for them so they do not outlive the schedule."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("dj-slot-"):
            thread.join(max(0.0, deadline - time.monotonic()))

