"""The model's handlers and the trace they (and the fault proxy, and the driver) write.

Every run is recorded by the handler itself, from inside the worker: a `run_start` line before
it acts and a `run_end` line after, with the attempt number it saw and what it did. The trace
is one append-only file shared by threads and worker processes (one os.write per line), so
a kill -9 leaves every line written before it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from dj_consumer import FailJob, Job, Registry
from dj_consumer.clock import Clock
from dj_consumer.errors import exception_class
from tests.model.schedule import OURS

#: Our handlers' max_run_time (per job, so the worker's lock horizon stays Ruby's 4 h).
RUN_TIME = 1.0
#: How long a handler that ignores timed_out keeps going.
HANG = 2.5
#: The message of defect #3: a lone surrogate no driver can encode.
SURROGATE = "cannot import " + b"caf\xe9.csv".decode("utf-8", "surrogateescape")


class Trace:
    """Append-only JSON lines: {"ev": …, "t": wall time, "pid": …, …}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def emit(self, ev: str, **data: Any) -> None:
        line = json.dumps({"ev": ev, "t": time.time(), "pid": os.getpid(), **data}, default=str)
        with self._lock:
            if self._fd >= 0:  # after close: a thread the schedule gave up on, nothing to add
                os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            self._fd = -1


def read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        if line.strip():
            events.append(json.loads(line))
    return events


def stamp(value: datetime | None) -> str | None:
    """A naive UTC time as the model compares it."""
    return None if value is None else value.replace(tzinfo=None).isoformat(sep=" ")


def build_registry(trace: Trace, clock: Clock, *, drain: bool = False) -> Registry:
    """One handler for each of our names. In the quiet drain nothing waits (its clock is fake,
    so no timeout would ever fire): "timeout" and "hang" raise instead, "slow" is quick."""
    registry = Registry()
    for name, attempts in OURS.items():
        registry.run(name, max_attempts=attempts, max_run_time=RUN_TIME)(
            _handler(trace, clock, drain))
    return registry


def _handler(trace: Trace, clock: Clock, drain: bool) -> Callable[[Job], None]:
    def perform(j: Job) -> None:
        args = arguments(j)
        plan = str(args["plan"]).split(",")
        action = plan[min(j.attempts, len(plan) - 1)]
        if drain:
            action = {"timeout": "raise", "hang": "raise", "slow": "ok"}.get(action, action)
        run = {"run": uuid.uuid4().hex[:12], "id": j.id, "key": int(args["k"]), "name": j.name,
               "attempt": j.attempts, "by": j.locked_by, "action": action,
               "run_at": stamp(j.run_at), "drain": drain}
        trace.emit("run_start", **run)
        error: BaseException | None = None
        try:
            act(action, j, int(args["k"]))
        except BaseException as exc:
            error = exc
            raise
        finally:
            trace.emit("run_end", **run, timed_out=j.timed_out.is_set(),
                       error=None if error is None else str(error),
                       error_type=None if error is None else type(error).__name__,
                       error_class=None if error is None else exception_class(error),
                       now=stamp(clock.now()))

    return perform


def arguments(j: Job) -> dict[str, Any]:
    """{"k": key, "plan": …} from each of our handler shapes."""
    if j.name == "ModelAJ":
        return dict(j.payload["arguments"][0])
    if j.name == "ModelMailer.notify":
        return dict(j.payload["args"][0])
    return dict(j.payload)


def act(action: str, j: Job, key: int) -> None:
    if action == "slow":
        time.sleep(0.2)
    elif action == "raise":
        raise ValueError(f"model error: job {key} attempt {j.attempts}")
    elif action == "surrogate":
        raise ValueError(SURROGATE)
    elif action == "fail":
        raise FailJob(f"model gives up on job {key}")
    elif action == "timeout":
        j.timed_out.wait(5)  # cooperative: return once told to (or give up)
    elif action == "hang":
        time.sleep(HANG)  # ignores timed_out


def key_of(handler: str) -> int | None:
    """The key a handler of ours (or a look-alike) carries, whatever its shape."""
    match = re.search(r"^[ -]*k: (\d+)$", handler, re.M)
    return int(match.group(1)) if match else None


def handler_yaml(name: str, key: int, plan: str) -> str:
    """The handler Rails would write for job `key` of dispatch name `name` (ours or not)."""
    from dj_consumer.ruby_yaml import dump_handler

    args = {"k": key, "plan": plan}
    if "." in name:
        klass, method = name.split(".")
        return (f"--- !ruby/object:Delayed::PerformableMailer\nobject: !ruby/class '{klass}'\n"
                f"method_name: :{method}\nargs:\n- k: {key}\n  plan: {plan}\n")
    if name.startswith("ModelAJ"):
        return dump_handler(name, [args], shape="active_job")
    return dump_handler(name, args)
