"""Sample handlers: `dj-consumer work --import sample_jobs` (or `make demo`).

Each shows one part of the API: the payload, hooks, a job that fails and is retried, one that
fails for good, and a long job that honours `timed_out`.
"""

from __future__ import annotations

import time

from dj_consumer import FailJob, Job, job


@job.run("NewsletterJob")
def send_newsletter(j: Job) -> None:
    # !ruby/struct:NewsletterJob → {"list_id": 7, "subject": "…"}
    j.log.info("newsletter.sending", list_id=j.payload["list_id"], subject=j.payload["subject"])


@job.after("NewsletterJob")
def newsletter_done(j: Job) -> None:
    j.log.info("newsletter.after_hook")


@job.run("User#send_welcome")
def send_welcome(j: Job) -> None:
    # user.delay.send_welcome("en") → object: the User, args: ["en"]
    user = j.payload["object"]
    j.log.info("welcome.sending", to=user["email"], lang=j.payload["args"][0])


@job.run("ReportJob")
def build_report(j: Job) -> None:
    # ActiveJob: ReportJob.perform_later("monthly", year: 2026, format: :pdf)
    kind, options = j.payload["arguments"]
    j.log.info("report.building", kind=kind, year=options["year"], format=options["format"])


@job.run("FlakyJob", max_attempts=3)
def flaky(j: Job) -> None:
    # Fails on its first attempt: the row is rescheduled Ruby's way (now + attempts**4 + 5 s).
    if j.attempts == 0:
        raise ConnectionError("payment gateway timed out, will retry")


@job.failure("FlakyJob")
def flaky_gave_up(j: Job, exc: BaseException) -> None:
    j.log.error("flaky.gave_up", error=str(exc))


@job.run("DoomedJob")
def doomed(j: Job) -> None:
    # FailJob: fail for good now, no retries; the failure hook runs once.
    raise FailJob(f"account {j.payload['account_id']} is closed")


@job.failure("DoomedJob")
def doomed_failure(j: Job, exc: BaseException) -> None:
    j.log.warning("doomed.failure_hook", reason=str(exc))


@job.run("SlowJob", max_run_time=1)
def slow(j: Job) -> None:
    # Cooperative timeout: check j.timed_out and return; the attempt then counts as failed.
    for _ in range(j.payload["steps"]):
        if j.timed_out.is_set():
            j.log.warning("slow.giving_up")
            return
        time.sleep(0.1)
