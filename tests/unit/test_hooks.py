"""Issue 12 items 8-10, no database: `timed_out` as a flag, coroutine handlers and hooks,
signatures checked at registration, and a hook's own error never replacing the job's."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from dj_consumer import Job, Registry
from dj_consumer.clock import FakeClock
from dj_consumer.errors import RegistryError
from dj_consumer.models import Failed, Rescheduled, Succeeded
from tests.unit.test_executor import executor, make_job

# -- item 8: `if j.timed_out:` ------------------------------------------------------------------


def test_timed_out_reads_as_a_bool_and_still_works_as_an_event() -> None:
    j = make_job()
    assert not j.timed_out and bool(j.timed_out) is False
    assert not j.timed_out.is_set() and j.timed_out.wait(0.01) is False
    j.timed_out.set()
    assert j.timed_out and j.timed_out.is_set() and j.timed_out.wait(0.01) is True


def test_a_handler_written_from_the_readme_does_its_work() -> None:
    """`if j.timed_out: return` returned at once (an Event is always true): the job was
    deleted as a success without having done its work."""
    reg, done = Registry(), []

    @reg.run("J")
    def work(j: Job) -> None:
        for step in range(3):
            if j.timed_out:
                return
            done.append(step)

    spec = reg.spec("J")
    assert spec is not None
    assert executor(FakeClock()).execute(make_job(), spec) == Succeeded()
    assert done == [0, 1, 2]


# -- item 9: async def ----------------------------------------------------------------------------


def test_coroutine_handler_and_hooks_are_awaited() -> None:
    reg, calls = Registry(), []

    @reg.before("J")
    async def before(j: Job) -> None:
        await asyncio.sleep(0)
        calls.append("before")

    @reg.run("J")
    async def run(j: Job) -> None:
        await asyncio.sleep(0.01)
        calls.append("run")

    @reg.success("J")
    async def success(j: Job) -> None:
        calls.append("success")

    @reg.after("J")
    async def after(j: Job) -> None:
        calls.append("after")

    spec = reg.spec("J")
    assert spec is not None
    ex = executor(FakeClock())
    assert ex.execute(make_job(), spec) == Succeeded()
    assert calls == ["before", "run", "success", "after"]
    ex.close_loop()


def test_coroutine_errors_are_failed_attempts_and_reach_async_error_hooks() -> None:
    reg, seen = Registry(), []

    @reg.run("J")
    async def run(j: Job) -> None:
        raise ValueError("async boom")

    @reg.error("J")
    async def error(j: Job, exc: BaseException) -> None:
        seen.append(str(exc))

    spec = reg.spec("J")
    assert spec is not None
    ex = executor(FakeClock())
    out = ex.execute(make_job(), spec)
    assert isinstance(out, Rescheduled) and out.last_error.startswith("ValueError: async boom\nTraceback")
    assert seen == ["async boom"]
    ex.close_loop()


def test_a_coroutine_past_max_run_time_is_cancelled_and_fails_as_a_timeout() -> None:
    reg, finished, cancelled = Registry(), [], []

    @reg.run("J", max_run_time=0.3)
    async def run(j: Job) -> None:
        try:
            await asyncio.sleep(30)  # ignores timed_out
            finished.append(True)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    spec = reg.spec("J")
    assert spec is not None
    ex = executor(FakeClock())
    started = time.monotonic()
    job = make_job()
    out = ex.execute(job, spec)
    assert time.monotonic() - started < 10
    assert isinstance(out, Rescheduled) and out.attempts == 1
    assert out.last_error.startswith("dj_consumer.errors.JobTimeout: execution expired")
    assert cancelled == [True] and finished == [] and job.timed_out
    ex.close_loop()


def test_one_event_loop_per_thread_is_reused() -> None:
    reg, loops = Registry(), []

    @reg.run("J")
    async def run(j: Job) -> None:
        loops.append(asyncio.get_running_loop())

    spec = reg.spec("J")
    assert spec is not None
    ex = executor(FakeClock())
    for _ in range(3):
        assert ex.execute(make_job(), spec) == Succeeded()
    other = threading.Thread(target=lambda: (ex.execute(make_job(), spec), ex.close_loop()))
    other.start()
    other.join(10)
    assert loops[0] is loops[1] is loops[2] and loops[3] is not loops[0]
    ex.close_loop()
    assert loops[0].is_closed()


def test_a_coroutine_handler_runs_in_a_child_process_too() -> None:
    reg = Registry()

    @reg.run("J", timeout="process")
    async def run(j: Job) -> None:
        await asyncio.sleep(0)
        raise KeyError("from the child loop")

    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Rescheduled) and out.last_error.startswith("KeyError: 'from the child loop'\n")


# -- item 10: signatures and hook errors ----------------------------------------------------------


def no_args() -> None: ...


def one_arg(j: Job) -> None: ...


def two_args(j: Job, exc: BaseException) -> None: ...


@pytest.mark.parametrize(
    ("kind", "fn"),
    [("run", no_args), ("run", two_args), ("before", two_args), ("after", no_args),
     ("success", two_args), ("error", one_arg), ("failure", one_arg), ("failure", no_args)],
)
def test_a_wrong_signature_is_refused_at_registration_naming_the_function(kind: str, fn: Any) -> None:
    reg = Registry()
    with pytest.raises(RegistryError) as info:
        getattr(reg, kind)("J")(fn)
    message = str(info.value)
    assert f"{fn.__qualname__} in {__file__}:" in message
    assert ("(job, exc)" if kind in ("error", "failure") else "(job)") in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["run", "before", "after", "success", "error", "failure"])
def test_non_callables_are_refused(kind: str) -> None:
    with pytest.raises(RegistryError, match="not callable"):
        getattr(Registry(), kind)("J")("print('hi')")


def test_flexible_signatures_are_accepted() -> None:
    class Callable:
        def __call__(self, j: Job) -> None: ...

    def star(*args: Any) -> None: ...

    def defaults(j: Job, extra: int = 1) -> None: ...

    def keyword_only_with_default(j: Job, exc: BaseException, *, note: str = "") -> None: ...

    reg = Registry()
    reg.run("A")(star)
    reg.before("A")(Callable())
    reg.after("A")(defaults)
    reg.error("A")(keyword_only_with_default)
    reg.failure("A")(functools.partial(lambda tag, j, e: None, "tag"))
    reg.success("A")(print)  # a builtin: accepted (it takes *args)
    assert reg.spec("A") is not None


def test_reschedule_at_must_take_now_and_attempts() -> None:
    with pytest.raises(RegistryError, match="reschedule_at"):
        Registry().run("A", reschedule_at=lambda now: now)  # type: ignore[arg-type,misc]


def test_a_broken_error_hook_never_replaces_the_jobs_own_error() -> None:
    reg = Registry()

    @reg.run("J")
    def run(j: Job) -> None:
        raise ValueError("the job's own error")

    @reg.error("J")
    def error(j: Job, exc: BaseException) -> None:
        raise RuntimeError("the hook is broken")

    spec = reg.spec("J")
    assert spec is not None
    with capture_logs() as logs:
        out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Rescheduled)
    assert out.last_error.startswith("ValueError: the job's own error\nTraceback")
    assert "ValueError: the job's own error" in out.last_error
    assert "error hook raised RuntimeError: the hook is broken" in out.last_error
    failed = [e for e in logs if e["event"] == "job.hook_failed"]
    assert failed and failed[0]["hook"] == "error" and "the hook is broken" in failed[0]["error"]


def test_a_broken_after_hook_never_replaces_the_jobs_own_error() -> None:
    reg = Registry()
    reg.run("J")(lambda j: 1 / 0)
    reg.after("J")(lambda j: [][1])
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Rescheduled)
    assert out.last_error.startswith("ZeroDivisionError: division by zero\n")
    assert "after hook raised IndexError" in out.last_error


def test_a_broken_after_hook_still_fails_a_job_that_succeeded() -> None:
    """Ruby's invoke_job runs `after` in an ensure: its exception fails the attempt."""
    reg = Registry()
    reg.run("J")(lambda j: None)
    reg.after("J")(lambda j: [][1])
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Rescheduled) and out.last_error.startswith("IndexError: list index out of range\n")


def test_a_broken_failure_hook_is_appended_to_last_error() -> None:
    reg = Registry()
    reg.run("J")(lambda j: 1 / 0)
    reg.failure("J")(lambda j, e: {}["missing"])
    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(attempts=24), spec)
    assert isinstance(out, Failed) and out.last_error.startswith("ZeroDivisionError: division by zero\n")
    assert "failure hook raised KeyError: 'missing'" in out.last_error


def test_failjob_from_the_error_hook_fails_for_good_keeping_the_jobs_error() -> None:
    from dj_consumer import FailJob

    reg = Registry()
    reg.run("J")(lambda j: 1 / 0)

    @reg.error("J")
    def give_up(j: Job, exc: BaseException) -> None:
        raise FailJob("no point retrying")

    spec = reg.spec("J")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Failed) and out.attempts == 1
    assert out.last_error.startswith("ZeroDivisionError: division by zero\n")
    assert "error hook raised FailJob: no point retrying" in out.last_error


def test_a_forked_handlers_return_value_comes_back_or_fails_the_attempt() -> None:
    import dj_consumer

    reg = Registry()

    @reg.run("Made", timeout="process")
    def made(j: Job) -> dict[str, int]:
        return {"pid_differs": int(os.getpid() != j.payload["parent"])}

    @reg.run("Unsendable", timeout="process")
    def unsendable(j: Job) -> object:
        return lambda: None  # cannot be pickled back to the worker

    assert dj_consumer.run_now("Made", {"parent": os.getpid()}, registry=reg) == \
        {"pid_differs": 1}
    spec = reg.spec("Unsendable")
    assert spec is not None
    out = executor(FakeClock()).execute(make_job(), spec)
    assert isinstance(out, Rescheduled)
    assert out.last_error.startswith("dj_consumer.errors.ChildJobError: "
                                     "the job's return value cannot leave its process")
