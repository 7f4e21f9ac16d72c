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


@job.run("CpuJob")
def cpu(j: Job) -> None:
    """CPU-bound work: ~20 ms of this thread's CPU in pure Python, holding the GIL (an image
    resize, a PDF, pandas); measured in CPU time, so a loaded machine does not shorten it."""
    seconds = float(j.payload.get("seconds", 0.02))
    start = time.thread_time()
    total = 0
    while time.thread_time() - start < seconds:
        for i in range(2000):
            total += i * i


@job.run("User#noop")
def user_noop(j: Job) -> None:
    """`user.delay.noop`, the row rubydj-pyworker can run too (benchmarks/peer.py)."""
