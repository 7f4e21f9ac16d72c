"""timeout="process": a job's handler in a forked child, killed at its deadline."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable
from typing import Any

from dj_consumer.coroutines import run_to_end
from dj_consumer.errors import ChildJobError, FailJob, ProcessTimeout, exception_class, format_error
from dj_consumer.models import Job


def run_in_child(fn: Callable[[Job], Any], job: Job, run_time: float) -> Any:
    """timeout="process": run `fn(job)` in a forked child that is killed at run_time.

    fork, not spawn: the child inherits the registry and the job as they are, without
    pickling. It never touches the parent's database connections and leaves with os._exit.
    """
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def child() -> None:
        reader.close()
        try:
            value = run_to_end(fn(job))
            try:
                writer.send(("ok", value))
            except Exception as exc:  # it cannot be pickled: the attempt fails, saying why
                writer.send(("", "the job's return value cannot leave its process "
                             f"({type(value).__name__}: {exc})", ""))
        except BaseException as exc:
            writer.send((exception_class(exc), str(exc), format_error(exc).split("\n", 1)[1]))
        finally:
            writer.close()
            os._exit(0)

    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock; the child only
        # runs the handler and never takes the parent's locks (no logging setup, no DB).
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=child, name=f"dj-job-{job.id}", daemon=True)
        proc.start()
    writer.close()
    try:
        if not reader.poll(run_time):
            proc.kill()
            proc.join(5)
            raise ProcessTimeout(
                f"execution expired: the job's process (pid {proc.pid}) ran past "
                f"max_run_time ({run_time:g}s) and was killed"
            )
        try:
            result = reader.recv()
        except EOFError:
            result = ("ChildDied", "the job's process exited without a result", "")
    finally:
        reader.close()
        proc.join(5)
    if result is None:
        return None
    if result[0] == "ok":
        return result[1]
    kind, message, trace = result
    if kind == "ChildDied" or proc.exitcode not in (0, None):
        raise ChildJobError(f"the job's process died (exit code {proc.exitcode})")
    if kind == exception_class(FailJob()):
        raise FailJob(message)
    raise ChildJobError(message, trace, kind)
