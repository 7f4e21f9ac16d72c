"""A `dj-consumer work` subprocess whose JSON log lines are read as they come (issue 19 tests)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, clean_env

JOBS = '''
import os, time
from dj_consumer import FailJob, job

OUT = {out!r}

@job.run("OkJob")
def ok(j):
    time.sleep({ok_sleep})
    with open(OUT + "/locked_by.txt", "a") as f:
        f.write(j.locked_by + "\\n")

@job.run("BadJob")
def bad(j):
    raise RuntimeError("bad on purpose")

@job.run("HangJob")
def hang(j):
    marker = OUT + "/hang.pid"
    if os.path.exists(marker):
        return  # the second run, after the first one's process was killed
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    time.sleep(120)
'''


class Proc:
    """`dj-consumer work …` with --log-format json; stderr lines collected in a thread."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None, user: int | None = None) -> None:
        """`dj-consumer work ARGS` from this checkout, or `command` exactly as given (with
        `env` as its whole environment), as `user` if given."""
        cmd = command or [sys.executable, "-m", "dj_consumer.cli", "work", *args,
                          "--log-format", "json"]
        environ = env if command else clean_env(PYTHONPATH=f"{ROOT}:{cwd}", **(env or {}))
        extra: dict[str, Any] = {} if user is None else {"user": user, "group": user,
                                                          "extra_groups": []}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=cwd, env=environ, **extra)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_for(self, what: Callable[[], Any], timeout: float = 60, why: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"exited {self.proc.returncode} waiting for {why}:\n"
                                     + "\n".join(self.lines[-30:]))
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {why}:\n" + "\n".join(self.lines[-30:]))

    def port(self) -> int:
        event = self.wait_for(lambda: self.events("metrics.listening"), why="the metrics port")
        return int(event[0]["port"])

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.close()
        return code

    def close(self) -> None:
        """Kill what still runs (children too), read the last lines, close the pipe."""
        self.kill()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for event in self.events("supervisor.child_started"):  # never leave a child behind
            try:
                import os

                os.kill(int(event["pid"]), signal.SIGKILL)
            except OSError:
                pass


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric in a Prometheus text exposition, by label set."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(text: str, name: str) -> float:
    return sum(samples(text, name).values())


def write_jobs(tmp_path: Path, ok_sleep: float = 0.02) -> Path:
    (tmp_path / "issue19jobs.py").write_text(JOBS.format(out=str(tmp_path), ok_sleep=ok_sleep))
    return tmp_path
