"""The Python side of the screenshots' run (tests/browser/screenshots.py): ReportJob is ours,
takes long enough to be seen holding its lease, and reports its progress."""

from __future__ import annotations

import time

from dj_consumer import Job, job


@job.run("ReportJob")
def report(j: Job) -> None:
    accounts = 60
    for done in range(accounts):
        if j.timed_out.is_set():
            return
        j.report_progress(done, accounts, stage="accounts")
        time.sleep(0.5)
