"""Handlers the dashboard under test imports (tests/webserver.py): their names count as
Python's on the overview. The dashboard never runs them."""

from __future__ import annotations

from dj_consumer import Job, job


@job.run("PyReportJob")
def report(j: Job) -> None:
    raise AssertionError("the dashboard must never run a job")


@job.run("NoopJob")
def noop(j: Job) -> None:
    raise AssertionError("the dashboard must never run a job")
