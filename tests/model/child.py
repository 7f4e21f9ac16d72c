"""A worker process of the model test: `python -m tests.model.child SPEC.json`.

SPEC (written by driver.ProcessWorker): the worker's config, its faults, the trace file, the
log file. The worker runs on this process's main thread, so SIGTERM (and a second SIGTERM)
reach its own signal handlers; the driver also sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import structlog

from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.store import Store
from dj_consumer.worker import Worker
from tests.model import faults
from tests.model.jobs import Trace, build_registry
from tests.model.schedule import Fault


def _quiet_schedule_over(args: threading.ExceptHookArgs) -> None:
    """A thread of this worker ended by the closed tap is in the trace already."""
    if args.exc_type is None or not issubclass(args.exc_type, faults.ScheduleOver):
        threading.__excepthook__(args)


def main(path: str) -> None:
    threading.excepthook = _quiet_schedule_over
    spec = json.loads(Path(path).read_text())
    log = open(spec["log"], "a")  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper("iso"),
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=log))
    trace = Trace(Path(spec["trace"]))
    config = Config.from_mapping(spec["config"])
    store = Store(config)
    tap = faults.install(store, faults.Tap(
        config.worker_id, [Fault(**f) for f in spec["faults"]], trace,
        backend=store.dialect, url=spec["url"], table=spec["table"]))
    worker = Worker(config, build_registry(trace, SystemClock()), store=store)
    # A SIGTERM before start() installed its handlers: stop() before start() is honoured.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    trace.emit("started", worker=config.worker_id)
    try:
        worker.start()
    except BaseException as exc:
        trace.emit("start_raised", worker=config.worker_id, error=repr(exc))
    finally:
        tap.close()
        trace.emit("returned", worker=config.worker_id)
    # Anything of this worker still running (an abandoned slot) shows itself in the trace now.
    time.sleep(0.5)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
