"""The Python handlers the benchmarks run (`--import benchmarks.jobs` for the CLI)."""

from __future__ import annotations

import time

from dj_consumer import Job, job


@job.run("NoopJob")
def noop(j: Job) -> None:
    """Nothing: measures the worker, not the work."""


@job.run("SleepJob")
def sleep(j: Job) -> None:
    """I/O-bound work: waits `seconds` (20 ms in the benchmarks) without holding the GIL."""
    time.sleep(float(j.payload.get("seconds", 0.02)))
