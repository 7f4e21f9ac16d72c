"""Starting the measured processes: benchmark children, the dj-consumer CLI, Ruby workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.env import Target, scratch_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT = 900


class BenchError(RuntimeError):
    """A measured process failed; the message carries its stderr tail."""


@dataclass(frozen=True)
class Timing:
    jobs: int
    seconds: float
    cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        """The worker process's own CPU time per job, in microseconds (load-independent)."""
        return 1e6 * self.cpu / self.jobs if self.jobs else 0.0

    @classmethod
    def of(cls, result: dict[str, Any]) -> Timing:
        return cls(int(result["jobs"]), float(result["seconds"]), float(result.get("cpu", 0.0)))


def _cmd(mode: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.child", mode, json.dumps(args)]


def _result(proc: subprocess.CompletedProcess[str] | Any, what: str) -> dict[str, Any]:
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
        raise BenchError(f"{what} exited {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def child(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(_cmd(mode, args), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    return _result(proc, f"benchmarks.child {mode}")


def children(mode: str, many: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run several children at once (competing workers); wait for all."""
    procs = [subprocess.Popen(_cmd(mode, a), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for a in many]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        results.append(_result(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                               f"benchmarks.child {mode}"))
    return results


def cli(t: Target, table: str, *, concurrency: int = 1) -> tuple[Timing, Timing]:
    """`dj-consumer work --exit-on-complete --log-format json`: (wall clock incl. start-up, from
    worker.started to worker.stopped in its own logs)."""
    log_path = scratch_dir() / f"{table}.log"
    cmd = [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", t.url,
           "--table-name", table, "--import", "benchmarks.jobs", "--exit-on-complete",
           "--log-format", "json", "--sleep-delay", "0", "-n", str(concurrency)]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)
    wall = time.perf_counter() - started
    lines = log_path.read_text().splitlines()
    if proc.returncode != 0:
        raise BenchError(f"dj-consumer work exited {proc.returncode}:\n" + "\n".join(lines[-8:]))
    stamps: dict[str, datetime] = {}
    jobs = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "job.succeeded":
            jobs += 1
        if event.get("event") in ("worker.started", "worker.stopped"):
            stamps[event["event"]] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    log_path.unlink(missing_ok=True)
    inner = (stamps["worker.stopped"] - stamps["worker.started"]).total_seconds()
    return Timing(jobs, wall), Timing(jobs, inner)


def ruby_available() -> str | None:
    """None when `ruby` with delayed_job_active_record loads, else why not."""
    if shutil.which("ruby") is None:
        return "ruby is not installed"
    probe = subprocess.run(["ruby", "-e", 'require "delayed_job_active_record"'], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        return "ruby cannot load delayed_job_active_record: " + probe.stderr.strip().splitlines()[-1]
    return None


def ruby(t: Target, table: str, jobs: int, *, users: str | None = None) -> Timing:
    """A real Delayed::Worker#work_off(jobs); the script times the work itself. `users`: the
    table of the `User` records that `.delay` rows call their methods on."""
    proc = subprocess.run(["ruby", str(HERE / "ruby_worker.rb"), t.ruby_url, table, str(jobs)]
                          + ([users] if users else []),
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    result = _result(proc, "ruby_worker.rb")
    return Timing.of(result)
