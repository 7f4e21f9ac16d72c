"""`make bench`: run the scenarios, print one table, write it as markdown to .bench/results.md
(ignored by git); `make bench SAVE=1` (--output benchmarks/results.md) updates the committed one.

    python -m benchmarks.run [--jobs N] [--only sqlite,mariadb,postgresql]
                             [--scenario parse,noop,concurrency,io,memory,contention,latency,backlog,startup,status,web,cpu]
                             [--quick] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import env, procs
from benchmarks.report import Report
from benchmarks.scenarios import SCENARIOS, Context

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".bench" / "results.md"  # SAVE=1: benchmarks/results.md, the committed one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, help="jobs per noop run (default 3000, --quick 1000)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per comparison, best kept "
                                              "(default 2, --quick 1)")
    p.add_argument("--only", default=",".join(env.BACKENDS), metavar="A,B",
                   help="databases: sqlite,mariadb,postgresql (default all reachable)")
    p.add_argument("--scenario", default=",".join(SCENARIOS), metavar="A,B",
                   help="scenarios to run: " + ",".join(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="fewer jobs and rounds (about 2 minutes)")
    p.add_argument("--no-ruby", action="store_true", help="skip the Ruby delayed_job workers")
    p.add_argument("--output", type=Path, default=RESULTS,
                   help=f"markdown file (default {RESULTS.relative_to(ROOT)})")
    args = p.parse_args(argv)
    for name in _split(args.scenario):
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    for name in _split(args.only):
        if name not in env.BACKENDS:
            p.error(f"unknown database {name!r}; choose from {', '.join(env.BACKENDS)}")
    return args


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ruby_version() -> str:
    try:
        out = subprocess.run(["ruby", "-e", "print RUBY_VERSION"], capture_output=True, text=True,
                             timeout=60)
        return "ruby " + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "-"


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    jobs = args.jobs or (1000 if quick else 3000)
    rounds = args.rounds or (1 if quick else 2)
    targets: dict[str, env.Target] = {}
    header: list[tuple[str, str]] = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
                    f"{platform.release()}"),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("python", platform.python_version()),
    ]
    skipped: list[str] = []
    for backend in _split(args.only):
        t = env.target(backend)
        reason = env.reachable(t)
        if reason:
            skipped.append(reason)
            continue
        targets[backend] = t
        header.append((backend, t.version()))
    ruby_missing = "--no-ruby" if args.no_ruby else procs.ruby_available()
    header.append(("ruby", ruby_missing or _ruby_version() + ", delayed_job 4.1.9, "
                   "delayed_job_active_record 4.1.6, activerecord 6.1"))
    header.append(("load avg", "{:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg())))
    if "sqlite" in targets:
        header.append(("sqlite file", str(env.scratch_dir())))
    for reason in skipped:
        header.append(("skipped", reason))
    report = Report(header)
    ctx = Context(report=report, targets=targets, jobs=jobs, rounds=rounds, quick=quick,
                  ruby_missing=ruby_missing, log=_log)
    started = time.monotonic()
    try:
        for name in _split(args.scenario):
            SCENARIOS[name](ctx)
    finally:
        for table in ctx.backlogs.values():
            table.drop()
        env.cleanup_scratch()
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    header.append(("load avg", f"{load} at end; run took {time.monotonic() - started:.0f} s"))
    sys.stdout.write(report.text())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.markdown())
    _log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
