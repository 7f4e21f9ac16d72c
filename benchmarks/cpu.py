"""Scenario `cpu` (issue 19): CPU-bound handlers, processes vs threads.

A handler that burns ~20 ms of pure-Python CPU holds the GIL: `-n 2` threads cannot run two
at once, `--processes 2` can. Each variant drains the same jobs with `dj-consumer work
--exit-on-complete` (the supervisor and its children, as an operator runs it); jobs/s is
counted between the first worker.started and the last worker.stopped in the logs, so
interpreter start-up is left out. The children's peak RSS is read from /proc while they run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.env import CPU_HANDLER, Table, scratch_dir
from benchmarks.report import Section, rate, ratio

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [("p1 n1", 1, 1), ("p2 n1", 2, 1), ("p1 n2", 1, 2)]


def cpu(ctx: Context) -> None:
    targets = ctx.on("postgresql", "mariadb", "sqlite")
    if not targets:
        return
    t = targets[0]
    jobs = 150 if ctx.quick else 400
    s = Section(f"cpu: {jobs} jobs of ~20 ms pure-Python CPU on {t.backend}, "
                f"dj-consumer work --processes P -n T (jobs/s, best of {ctx.rounds})",
                ["variant", "jobs/s", "vs p1 n1", "handler cores", "children",
                 "max RSS per child MB"])
    ctx.log(f"cpu {t.backend}")
    best: dict[str, tuple[float, list[float]]] = {}
    with Table(t, "cpu") as table:
        for _ in range(ctx.rounds):
            for name, processes, threads in VARIANTS:
                table.clear()
                table.insert(CPU_HANDLER, jobs)
                speed, rss = drain(t.url, table.name, processes, threads)
                if name not in best or speed > best[name][0]:
                    best[name] = (speed, rss)
    base = best["p1 n1"][0]
    for name, _, _ in VARIANTS:
        speed, rss = best[name]
        s.add(name, rate(speed), ratio(speed, base), f"{speed * 0.02:.2f}", len(rss),
              ", ".join(f"{mb:.1f}" for mb in rss))
    p2, n2 = best["p2 n1"][0] / base, best["p1 n2"][0] / base
    s.note(f"--processes 2 / --processes 1: {p2:.2f}x; -n 2 / -n 1: {n2:.2f}x (threads share "
           "one GIL: only the database round trips of one overlap the other's handler)")
    s.note(f"{os.cpu_count()} cores, shared with whatever else runs: the ratio is the "
           "measure, not the jobs/s. handler cores = jobs/s x 20 ms of CPU: one process can "
           "never pass 1.00 (the GIL); two can use what the machine has free, up to 2")
    ctx.report.target("cpu: --processes 2 >= 1.7x --processes 1", f"{p2:.2f}x", p2 >= 1.7)
    peak = max(mb for _, rss in best.values() for mb in rss)
    ctx.report.target("cpu: RSS per child <= 80 MB", f"{peak:.1f} MB", peak <= 80)
    ctx.report.sections.append(s)


def drain(url: str, table: str, processes: int, threads: int) -> tuple[float, list[float]]:
    """(jobs/s, each child's peak RSS in MB) of one `dj-consumer work -x` run."""
    log_path = scratch_dir() / f"{table}.p{processes}n{threads}.log"
    cmd = [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", url,
           "--table-name", table, "--import", "benchmarks.jobs", "--exit-on-complete",
           "--log-format", "json", "--sleep-delay", "0.1", "--worker-id", "bench",
           "--processes", str(processes), "-n", str(threads)]
    peaks: dict[int, int] = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        while proc.poll() is None:
            for pid in _workers(proc.pid, processes):
                peaks[pid] = max(peaks.get(pid, 0), _rss_kb(pid))
            time.sleep(0.1)
    lines = log_path.read_text().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"dj-consumer work exited {proc.returncode}:\n" + "\n".join(lines[-8:]))
    started, stopped, jobs = [], [], 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        when = event.get("timestamp")
        if event.get("event") == "job.succeeded":
            jobs += 1
        elif event.get("event") == "worker.started":
            started.append(datetime.fromisoformat(when.replace("Z", "+00:00")))
        elif event.get("event") == "worker.stopped":
            stopped.append(datetime.fromisoformat(when.replace("Z", "+00:00")))
    log_path.unlink(missing_ok=True)
    seconds = (max(stopped) - min(started)).total_seconds()
    return jobs / seconds, [kb / 1024 for kb in peaks.values() if kb]


def _workers(pid: int, processes: int) -> list[int]:
    """The processes that run jobs: the supervisor's children, or (one process) itself."""
    if processes == 1:
        return [pid]
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
