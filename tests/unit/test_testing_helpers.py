"""dj_consumer.testing (make_job, run_inline), global "*" hooks, the registration warnings,
and what the outcome log lines carry — no database."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import structlog
from structlog.testing import capture_logs

from dj_consumer import FailJob, Job, Registry
from dj_consumer.clock import FakeClock
from dj_consumer.errors import RegistryError, RegistryWarning
from dj_consumer.recorder import ERROR_CLIP, error_fields, exception_class
from dj_consumer.testing import Failed, Rescheduled, Succeeded, make_job, run_inline

OBJECT_HANDLER = "--- !ruby/object:NewsletterJob\nlist_id: 7\nsubject: Hello\n"


def test_make_job_fills_every_field_and_takes_overrides() -> None:
    reg = Registry()
    reg.run("NewsletterJob", max_attempts=5, queue="mail")(lambda j: None)
    j = make_job("NewsletterJob", {"list_id": 7}, registry=reg, attempts=2, priority=3)
    assert (j.name, j.display_name, j.payload, j.attempts) == ("NewsletterJob", "NewsletterJob",
                                                              {"list_id": 7}, 2)
    assert (j.max_attempts, j.queue, j.priority) == (5, "mail", 3)  # the registration's options
    assert j.handler == "--- !ruby/object:NewsletterJob\nlist_id: 7\n"  # what Rails would write
    assert not j.timed_out and j.log is not None and isinstance(j.run_at, datetime)
    assert make_job("Other", timed_out=True, registry=reg).timed_out
    with pytest.raises(TypeError, match="unknown Job fields: colour"):
        make_job("NewsletterJob", registry=reg, colour="red")


def test_make_job_reads_a_handler_as_the_worker_does() -> None:
    j = make_job(handler=OBJECT_HANDLER, registry=Registry())
    assert (j.name, j.payload) == ("NewsletterJob", {"list_id": 7, "subject": "Hello"})
    assert j.handler == OBJECT_HANDLER
    delayed = make_job("User#send_welcome", {"args": ["en"]}, registry=Registry())
    assert delayed.handler.startswith("--- !ruby/object:User")


def test_run_inline_runs_the_hooks_in_rubys_order_and_returns_the_outcome() -> None:
    reg, calls = Registry(), []
    for kind in ("before", "success", "after"):
        getattr(reg, kind)("NewsletterJob")(lambda j, k=kind: calls.append(k))
    reg.run("NewsletterJob")(lambda j: calls.append(("run", j.payload["list_id"])))
    assert run_inline("NewsletterJob", {"list_id": 7}, registry=reg) == Succeeded()
    assert calls == ["before", ("run", 7), "success", "after"]


def test_run_inline_failed_attempt_failure_and_raise_errors() -> None:
    reg, seen = Registry(), []

    @reg.run("ImportJob", max_attempts=3)
    def work(j: Job) -> None:
        if j.payload.get("give_up"):
            raise FailJob("no such file")
        raise KeyError("email")

    reg.error("ImportJob")(lambda j, e: seen.append(("error", type(e).__name__)))
    reg.failure("ImportJob")(lambda j, e: seen.append(("failure", str(e))))
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, 0))
    out = run_inline("ImportJob", {}, registry=reg, clock=clock, attempts=1)
    assert isinstance(out, Rescheduled) and out.attempts == 2
    assert out.run_at == datetime(2026, 3, 1, 10, 0, 0) + timedelta(seconds=2**4 + 5)
    assert out.last_error.startswith("KeyError: 'email'\nTraceback") and isinstance(out.error, KeyError)
    assert seen == [("error", "KeyError")]
    out = run_inline("ImportJob", {}, registry=reg, attempts=2)  # the third failure is the last
    assert isinstance(out, Failed) and out.attempts == 3 and seen[-1] == ("failure", "'email'")
    out = run_inline("ImportJob", {"give_up": True}, registry=reg)
    assert isinstance(out, Failed) and out.attempts == 1 and seen[-1] == ("failure", "no such file")
    with pytest.raises(KeyError, match="email"):
        run_inline("ImportJob", {}, registry=reg, raise_errors=True)
    with pytest.raises(RegistryError, match=r"no @job\.run handler for 'Nope'"):
        run_inline("Nope", registry=reg)


def test_run_inline_takes_a_made_job_and_runs_async_handlers() -> None:
    reg, got = Registry(), []

    @reg.run("AsyncJob")
    async def work(j: Job) -> None:
        got.append(j.id)

    assert run_inline(make_job("AsyncJob", id=42, registry=reg), registry=reg) == Succeeded()
    assert got == [42]


def test_global_hooks_run_for_every_job_around_the_jobs_own() -> None:
    reg, calls = Registry(), []
    reg.before("*")(lambda j: calls.append(("*before", j.name)))
    reg.after("*")(lambda j: calls.append(("*after", j.name)))
    reg.error("*")(lambda j, e: calls.append(("*error", j.name, str(e))))
    reg.failure("*")(lambda j, e: calls.append(("*failure", j.name)))
    reg.success("*")(lambda j: calls.append(("*success", j.name)))
    reg.before("A")(lambda j: calls.append(("before", j.name)))
    reg.error("A")(lambda j, e: calls.append(("error", j.name)))
    reg.after("A")(lambda j: calls.append(("after", j.name)))
    reg.run("A", max_attempts=1)(lambda j: 1 / 0)
    reg.run("B")(lambda j: calls.append(("run", j.name)))  # registered after the "*" hooks
    assert reg.names() == ["A", "B"] and reg.orphan_hooks() == []
    assert isinstance(run_inline("A", registry=reg), Failed)
    assert calls == [("*before", "A"), ("before", "A"), ("error", "A"),
                     ("*error", "A", "division by zero"), ("after", "A"), ("*after", "A"),
                     ("*failure", "A")]
    calls.clear()
    assert run_inline("B", registry=reg) == Succeeded()
    assert calls == [("*before", "B"), ("run", "B"), ("*success", "B"), ("*after", "B")]


def test_a_global_hook_that_raises_never_replaces_the_jobs_error() -> None:
    reg, after = Registry(), []

    def broken_reporter(j: Job, exc: BaseException) -> None:
        raise ConnectionError("sentry is down")

    reg.error("*")(broken_reporter)
    reg.after("*")(lambda j: after.append(j.id))
    reg.run("A")(lambda j: 1 / 0)
    with capture_logs() as logs:
        out = run_inline("A", registry=reg, id=5)
    assert isinstance(out, Rescheduled) and isinstance(out.error, ZeroDivisionError)
    assert out.last_error.startswith("ZeroDivisionError: division by zero\n")
    assert "error hook raised ConnectionError: sentry is down" in out.last_error
    assert after == [5]
    failed = [e for e in logs if e["event"] == "job.hook_failed"]
    assert failed and failed[0]["error_class"] == "ConnectionError"


def test_a_raising_after_hook_still_lets_the_global_after_run() -> None:
    reg, calls = Registry(), []
    reg.after("A")(lambda j: 1 / 0)
    reg.after("*")(lambda j: calls.append("*after"))
    reg.run("A")(lambda j: None)
    out = run_inline("A", registry=reg)
    assert isinstance(out, Rescheduled) and isinstance(out.error, ZeroDivisionError)
    assert calls == ["*after"]


def test_star_rules() -> None:
    reg = Registry()
    with pytest.raises(RegistryError, match='"\\*" registers hooks for every job'):
        reg.run("*")(lambda j: None)
    reg.error("*")(lambda j, e: None)
    with pytest.raises(RegistryError, match="already has a error hook"):
        reg.error("*")(lambda j, e: None)
    with pytest.raises(RegistryError, match="must take \\(job, exc\\)"):
        reg.failure("*")(lambda j: None)
    reg.clear()
    reg.error("*")(lambda j, e: None)  # clear() forgets the global hooks too


@pytest.mark.parametrize("name", ["newsletter_job", "user#send_welcome", "Newsletter Job",
                                  "billing::ChargeJob"])
def test_a_name_no_ruby_job_can_have_is_warned_with_file_and_line(name: str) -> None:
    def handler(j: Job) -> None: ...

    with pytest.warns(RegistryWarning, match=r"can never match a Ruby job") as warned:
        Registry().run(name)(handler)
    assert "test_testing_helpers.py:" in str(warned[0].message)
    assert warned[0].filename == __file__  # points at the registration


@pytest.mark.parametrize("name", ["NewsletterJob", "Billing::ChargeJob", "User#send_welcome",
                                  "UserMailer.welcome", "User#admin?", "Post#title="])
def test_ruby_names_are_not_warned(name: str) -> None:
    Registry().run(name)(lambda j: None)  # filterwarnings = error: a warning fails this


def test_a_handler_that_returns_after_timing_out_is_logged_as_retried() -> None:
    reg = Registry()
    reg.run("Slow", max_run_time=0.2)(lambda j: j.timed_out.wait(5))  # waits, then returns
    with capture_logs() as logs:
        out = run_inline("Slow", registry=reg)
    assert isinstance(out, Rescheduled)
    timed_out = [e for e in logs if e["event"] == "job.timed_out"]
    assert len(timed_out) == 1 and timed_out[0]["returned"] is True
    assert timed_out[0]["then"] == "retried" and "its work is retried" in timed_out[0]["hint"]


def test_a_timeout_on_the_last_attempt_says_it_failed_for_good() -> None:
    reg = Registry()
    reg.run("Slow", max_run_time=0.2, max_attempts=1)(lambda j: j.timed_out.wait(5))
    with capture_logs() as logs:
        out = run_inline("Slow", registry=reg)
    assert isinstance(out, Failed)
    assert [e["then"] for e in logs if e["event"] == "job.timed_out"] == ["failed for good"]


class CardDeclined(Exception):
    pass


def test_outcome_log_fields_carry_the_class_a_clipped_message_and_the_exception() -> None:
    try:
        raise KeyError("email")
    except KeyError as exc:
        error: BaseException = exc
    fields = error_fields("'email'\nTraceback (most recent call last):\n  ...", error)
    assert fields == {"error": "'email'", "error_class": "KeyError", "exc_info": error}
    long = error_fields("x" * 5000 + "\ntrace", None)
    assert long["error"] == "x" * ERROR_CLIP + "… (5000 chars)" and "error_class" not in long
    assert exception_class(CardDeclined()) == f"{__name__}.CardDeclined"


def test_json_rendering_of_a_rescheduled_line_has_the_traceback() -> None:
    import json

    try:
        {}["email"]
    except KeyError as exc:
        error: BaseException = exc
    render = structlog.processors.format_exc_info
    event = render(None, "warning", {"event": "job.rescheduled",
                                     **error_fields("'email'\ntrace", error)})
    line = json.loads(structlog.processors.JSONRenderer()(None, "warning", event))
    assert line["error_class"] == "KeyError" and line["error"] == "'email'"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].rstrip().endswith("KeyError: 'email'")


def test_run_now_returns_the_result_and_raises_the_error_after_the_hooks() -> None:
    import dj_consumer

    reg = Registry()
    calls: list[str] = []

    @reg.run("Sum")
    def total(j: Job) -> dict[str, int]:
        j.report_progress(1, 2, "adding")  # goes nowhere without a run record
        return {"sum": sum(j.track(j.payload["items"], lambda n: n))}

    @reg.before("Sum")
    def before(j: Job) -> None:
        calls.append("before")

    @reg.run("Broken")
    def broken(j: Job) -> None:
        raise LookupError("no row 7")

    @reg.error("Broken")
    def error(j: Job, exc: BaseException) -> None:
        calls.append(f"error {exc}")

    @reg.run("Later")
    async def later(j: Job) -> str:
        return "done"

    assert dj_consumer.run_now("Sum", {"items": [1, 2, 3]}, registry=reg) == {"sum": 6}
    assert dj_consumer.run_now("Later", registry=reg) == "done"
    with pytest.raises(LookupError, match="no row 7"):
        dj_consumer.run_now("Broken", registry=reg)
    assert calls == ["before", "error no row 7"]
