"""Issue 19: /healthz and /readyz decided from what the worker tells its observer (a fake
clock), and the observer seam's guarantees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dj_consumer.events import Observer, Observers, Poll
from dj_consumer.health import LIVE_WINDOW, Health, read_published
from tests.conftest import ROOT, clean_env


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_live_while_the_loop_turns() -> None:
    clock = Clock()
    h = Health(sleep_delay=5, slots=1, clock=clock)
    assert h.live() == (False, "not started")
    h.tick()
    assert h.live()[0]
    clock.t += LIVE_WINDOW + 1
    assert not h.live()[0] and "last turned" in h.live()[1]


def test_ready_within_three_sleep_delays_of_a_poll_that_reached_the_database() -> None:
    clock = Clock()
    h = Health(sleep_delay=5, slots=2, clock=clock)
    assert h.ready() == (False, "no reserve has reached the database yet")
    h.polled(Poll.NOTHING, 0.01)
    assert h.ready() == (True, "ok")
    clock.t += 15
    assert h.ready()[0]
    clock.t += 0.5
    assert not h.ready()[0] and "15.5s ago" in h.ready()[1]
    h.polled(Poll.FOUND, 0.01)
    assert h.ready()[0]
    h.polled(Poll.ERROR, 0.0, RuntimeError("connection refused"))
    assert h.ready() == (False, "the last reserve failed: RuntimeError: connection refused")
    h.polled(Poll.NOTHING, 0.01)
    h.stopping()
    assert h.ready() == (False, "shutting down")


def test_ready_while_every_slot_runs_a_long_job() -> None:
    clock = Clock()
    h = Health(sleep_delay=1, slots=2, clock=clock)
    h.polled(Poll.FOUND, 0.01)
    h.started(None)  # type: ignore[arg-type]
    clock.t += 60
    assert not h.ready()[0]  # one slot is free and should have polled
    h.started(None)  # type: ignore[arg-type]
    assert h.ready() == (True, "ok (every slot is running a job)")
    h.ran(None, 60)  # type: ignore[arg-type]
    assert not h.ready()[0]


def test_the_window_is_never_shorter_than_a_second() -> None:
    clock = Clock()
    h = Health(sleep_delay=0.01, slots=1, clock=clock)
    h.polled(Poll.NOTHING, 0.01)
    clock.t += 0.9
    assert h.ready()[0]


def test_published_state_goes_stale(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "health.0.json"
    h = Health(sleep_delay=1, slots=1, clock=clock, publish_to=path)
    h.polled(Poll.NOTHING, 0.01)
    h.tick()
    assert read_published(path, clock.t) == ((True, "ok"), (True, "ok"))
    live, ready = read_published(path, clock.t + LIVE_WINDOW + 1)
    assert not live[0] and not ready[0] and "written" in live[1]
    assert read_published(tmp_path / "none.json", clock.t)[0] == (False, "no health file yet")


def test_a_failing_observer_is_logged_and_the_others_still_hear(
        capsys: pytest.CaptureFixture[str]) -> None:
    heard: list[str] = []

    class Broken(Observer):
        def tick(self) -> None:
            raise ValueError("boom")

    class Ear(Observer):
        def tick(self) -> None:
            heard.append("tick")

    Observers([Broken(), Ear()]).tick()
    assert heard == ["tick"]


def test_importing_the_worker_does_not_import_prometheus_client() -> None:
    """Metrics off costs nothing: the package, the worker and the CLI's work command never
    load prometheus-client unless metrics_port asks for it."""
    probe = ("import sys, dj_consumer, dj_consumer.worker, dj_consumer.child, "
             "dj_consumer.supervisor, dj_consumer.cli.work, dj_consumer.metrics\n"
             "assert 'prometheus_client' not in sys.modules, 'loaded'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=clean_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
