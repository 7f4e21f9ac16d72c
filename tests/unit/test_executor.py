"""One attempt, no database: hooks order, outcomes, Ruby's reschedule formula, FakeClock."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import structlog

from dj_consumer import FailJob, Job, Registry
from dj_consumer.clock import FakeClock
from dj_consumer.errors import ChildJobError, HandlerParseError, JobTimeout, exception_class
from dj_consumer.executor import Executor, Watchdog, default_reschedule_at, format_error
from dj_consumer.models import Failed, Rescheduled, Succeeded


def make_job(attempts: int = 0, max_attempts: int = 25) -> Job:
    return Job(id=1, name="J", display_name="J", payload={}, attempts=attempts,
               max_attempts=max_attempts, queue=None, priority=0, run_at=None, locked_by="me",
               handler="--- !ruby/object:J {}\n", log=structlog.get_logger())


def executor(clock: FakeClock, **kw: Any) -> Executor:
    return Executor(clock=clock, watchdog=Watchdog(__import__("time").monotonic),
                    max_run_time=kw.get("max_run_time", 100.0),
                    destroy_failed_jobs=kw.get("destroy_failed_jobs", False))


def test_rubys_reschedule_formula() -> None:
    now = datetime(2026, 1, 1)
    assert [default_reschedule_at(now, n) - now for n in (1, 2, 3, 5)] == [
        timedelta(seconds=s) for s in (6, 21, 86, 630)
    ]


def test_success_hook_order() -> None:
    reg, calls = Registry(), []
    for kind in ("before", "success", "after"):
        getattr(reg, kind)("J")(lambda j, k=kind: calls.append(k))
    reg.run("J")(lambda j: calls.append("run"))
    spec = reg.spec("J")
    assert spec is not None
    assert executor(FakeClock()).execute(make_job(), spec) == Succeeded()
    assert calls == ["before", "run", "success", "after"]


def test_error_path_and_reschedule_uses_the_clock() -> None:
    reg, calls = Registry(), []
    reg.run("J")(lambda j: 1 / 0)
    reg.error("J")(lambda j, e: calls.append(("error", type(e).__name__)))
    reg.success("J")(lambda j: calls.append("success"))
    reg.after("J")(lambda j: calls.append("after"))
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, 0))
    spec = reg.spec("J")
    assert spec is not None
    out = executor(clock).execute(make_job(attempts=2), spec)
    assert isinstance(out, Rescheduled)
    assert out.attempts == 3
    assert out.run_at == datetime(2026, 3, 1, 10, 0, 0) + timedelta(seconds=3**4 + 5)
    assert out.last_error.startswith("ZeroDivisionError: division by zero\nTraceback")
    assert calls == [("error", "ZeroDivisionError"), "after"]


def test_failjob_and_exhausted_attempts_fail_with_failure_hook() -> None:
    reg, failures = Registry(), []

    def refuse(j: Job) -> None:
        raise FailJob("nope")

    reg.run("J")(refuse)
    reg.failure("J")(lambda j, e: failures.append(str(e)))
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert out == Failed(attempts=1, last_error=out.last_error, destroy=False)  # type: ignore[union-attr]
    assert failures == ["nope"]


def test_failure_hook_errors_are_logged_not_raised() -> None:
    reg = Registry()
    reg.run("J", destroy_failed_jobs=True)(lambda j: 1 / 0)
    reg.failure("J")(lambda j, e: 1 / 0)
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(attempts=24), spec)
    assert isinstance(out, Failed) and out.destroy and out.attempts == 25


def test_bad_reschedule_at_falls_back_to_rubys_formula() -> None:
    reg = Registry()
    reg.run("J", reschedule_at=lambda now, n: "tomorrow")(lambda j: 1 / 0)  # type: ignore[arg-type,return-value]
    clock = FakeClock(datetime(2026, 3, 1))
    spec = reg.spec("J")
    assert spec is not None
    out = executor(clock).execute(make_job(), spec)
    assert isinstance(out, Rescheduled) and out.run_at == datetime(2026, 3, 1, 0, 0, 6)


def test_job_max_run_time_is_capped_at_the_workers() -> None:
    reg = Registry()
    reg.run("J", max_run_time=10_000)(lambda j: None)
    reg.run("K", max_run_time=5)(lambda j: None)
    ex = executor(FakeClock(), max_run_time=60)
    assert ex.run_time_for(reg.spec("J")) == 60  # type: ignore[arg-type]
    assert ex.run_time_for(reg.spec("K")) == 5  # type: ignore[arg-type]


def test_timed_out_is_set_at_the_deadline() -> None:
    reg = Registry()
    waited: list[bool] = []
    reg.run("J", max_run_time=0.2)(lambda j: waited.append(j.timed_out.wait(5)))
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert waited == [True]
    assert isinstance(out, Rescheduled)
    assert out.last_error.startswith("dj_consumer.errors.JobTimeout: execution expired "
                                     "(Delayed::Worker.max_run_time is only 0 seconds)")


def test_watchdog_cancel() -> None:
    import time

    dog = Watchdog(time.monotonic)
    fired = threading.Event()
    handle = dog.schedule(0.05, fired.set)
    dog.cancel(handle)
    assert not fired.wait(0.2)
    dog.schedule(0.01, fired.set)
    assert fired.wait(1)
    dog.stop()


def test_watchdog_wakes_only_for_deadlines_before_its_next_look() -> None:
    import time

    dog = Watchdog(time.monotonic)
    dog.cancel(dog.schedule(3600, lambda: None))
    time.sleep(0.05)  # the thread is up and asleep
    # Jobs far from max_run_time: no thread switch each (it was one per job).
    for _ in range(200):
        dog.cancel(dog.schedule(3600, lambda: None))
    assert dog.wakeups <= 2
    # A deadline before its next look still wakes it, and fires on time.
    fired = threading.Event()
    started = time.monotonic()
    dog.schedule(0.02, fired.set)
    assert fired.wait(1)
    assert time.monotonic() - started < 0.3
    dog.stop()


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


class CardDeclined(Exception):
    pass


def test_format_error_first_line_names_the_class_then_backtrace() -> None:
    text = format_error(_raised(KeyError("email")))
    first, rest = text.split("\n", 1)
    # Python's own last traceback line, not Ruby 4.1.9's message-only "'email'".
    assert first == "KeyError: 'email'"
    assert rest.startswith("Traceback (most recent call last):")
    assert rest.endswith("KeyError: 'email'")


def test_format_error_names_a_messageless_and_a_non_builtin_error_like_error_class() -> None:
    assert format_error(_raised(ValueError())).split("\n", 1)[0] == "ValueError"
    declined = _raised(CardDeclined("card 4242 declined"))
    assert format_error(declined).split("\n", 1)[0] == \
        f"{__name__}.CardDeclined: card 4242 declined"
    assert format_error(declined).split("\n", 1)[0].startswith(exception_class(declined) + ": ")
    timeout = _raised(JobTimeout.after(2))
    assert format_error(timeout).split("\n", 1)[0] == "dj_consumer.errors.JobTimeout: " \
        "execution expired (Delayed::Worker.max_run_time is only 2 seconds)"


def test_format_error_unnamed_keeps_the_message_alone() -> None:
    text = format_error(_raised(HandlerParseError("Job failed to load: x")), named=False)
    assert text.split("\n", 1)[0] == "Job failed to load: x"


def test_format_error_names_a_process_child_error_by_the_child_class() -> None:
    error = ChildJobError("'email'", "Traceback (most recent call last):\nKeyError: 'email'",
                          "KeyError")
    assert format_error(error) == "KeyError: 'email'\nTraceback (most recent call last):\n" \
        "KeyError: 'email'"
    assert exception_class(error) == "KeyError"
    died = ChildJobError("the job's process died (exit code 9)")
    assert format_error(died).split("\n", 1)[0] == \
        "dj_consumer.errors.ChildJobError: the job's process died (exit code 9)"
