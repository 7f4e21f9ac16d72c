"""The Python side of the screenshots' run (tests/browser/screenshots.py): ReportJob is ours,
and takes long enough to be seen holding its lease."""

from __future__ import annotations

import time

from dj_consumer import Job, job


@job.run("ReportJob")
def report(j: Job) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not j.timed_out.is_set():
        time.sleep(0.5)
