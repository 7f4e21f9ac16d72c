"""Issue 19: a child that dies is restarted after a backoff (1 s doubling to 30 s, back to 1 s
once a child has lived a minute), each restart logged; a child that exits 2 is not restarted.
The supervisor's decision (`_check`) driven directly; the real processes, kill -9 and the
restart are tests/integration/test_processes.py."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog

from dj_consumer import supervisor as sup
from dj_consumer.config import Config


@dataclass
class Dead:
    """A child process that has exited with `code`."""

    code: int
    pid: int = 4242

    def poll(self) -> int:
        return self.code


@pytest.fixture
def supervisor() -> Iterator[sup.Supervisor]:
    s = sup.Supervisor(Config.from_mapping({"database_url": "sqlite:///x.db", "processes": 2}),
                       ["work"])
    yield s
    shutil.rmtree(s.state_dir, ignore_errors=True)


def die(s: sup.Supervisor, code: int, lived: float) -> dict[str, object]:
    """Child 0 exits with `code` after `lived` seconds; the supervisor's log line about it."""
    child = s.children[0]
    child.proc = Dead(code)  # type: ignore[assignment]
    child.started = time.monotonic() - lived
    with structlog.testing.capture_logs() as logs:
        s._check(child)
    assert child.proc is None
    return logs[-1]


def test_restarts_back_off_doubling_to_thirty_seconds(supervisor: sup.Supervisor) -> None:
    waits = []
    for _ in range(7):
        line = die(supervisor, -signal.SIGKILL, lived=0.5)
        assert line["event"] == "supervisor.child_died" and line["exit_code"] == -signal.SIGKILL
        waits.append(line["restart_in_s"])
        child = supervisor.children[0]
        assert child.restart_at is not None
        assert child.restart_at - time.monotonic() == pytest.approx(line["restart_in_s"], abs=0.5)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    # A child that lived a minute before dying starts the backoff over.
    assert die(supervisor, 1, lived=sup.STEADY + 1)["restart_in_s"] == 1.0
    assert die(supervisor, 1, lived=0.5)["restart_in_s"] == 2.0


def test_a_child_is_restarted_when_its_backoff_has_passed(
        supervisor: sup.Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[int] = []
    monkeypatch.setattr(supervisor, "_spawn", lambda child: spawned.append(child.index))
    die(supervisor, 1, lived=0.5)
    child = supervisor.children[0]
    supervisor._check(child)
    assert spawned == []  # not before its backoff
    child.restart_at = time.monotonic() - 0.01
    supervisor._check(child)
    assert spawned == [0] and child.restarts == 1


def test_a_fatal_exit_is_not_restarted_and_stops_the_others(
        supervisor: sup.Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []

    @dataclass
    class Running:
        pid: int = 4343

        def poll(self) -> None:
            return None

        def send_signal(self, signum: int) -> None:
            sent.append(signum)

    supervisor.children[1].proc = Running()  # type: ignore[assignment]
    line = die(supervisor, sup.FATAL_EXIT, lived=0.5)
    assert line["event"] == "supervisor.child_fatal"
    assert supervisor.children[0].restart_at is None and supervisor.fatal
    assert sent == [signal.SIGTERM] and supervisor.stopping
