"""The first hour (#14): `make demo` installs the runtime alone and its output starts and ends
well; `make test` installs pinned tools; `make bench` leaves git status clean unless asked,
and measures parse speed with both parsers."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT, clean_env


def make_n(target: str, tmp_path: Path, *args: str) -> list[str]:
    """The commands `make TARGET` would run on a fresh clone (a venv that does not exist yet)."""
    # --no-print-directory: under `make test` this is a sub-make, which would add
    # "Entering/Leaving directory" lines.
    out = subprocess.run(["make", "--no-print-directory", "-n", target,
                          f"VENV={tmp_path / 'venv'}", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()


def pip_installs(lines: list[str]) -> list[str]:
    return [line.split(" install ", 1)[1] for line in lines if "-m pip install" in line
            and "--upgrade pip" not in line]


def test_make_demo_installs_the_runtime_only_and_make_test_the_dev_extra(tmp_path: Path) -> None:
    assert pip_installs(make_n("demo", tmp_path)) == ["-q -e ."]
    assert pip_installs(make_n("test", tmp_path)) == ["-q -e '.[dev]'"]


def test_dev_tools_are_pinned_and_no_install_needs_a_compiler() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {re.split(r"[=<>\[ ]", r, maxsplit=1)[0]: r for r in project["optional-dependencies"]["dev"]}
    for tool in ("pytest", "hypothesis", "mypy", "ruff"):
        assert re.fullmatch(rf"{tool}==[\d.]+", pins[tool]), pins[tool]
    deps = " ".join(project["dependencies"])
    assert "clibz" not in deps  # sdist only: every install downloaded ziglang and compiled
    assert "ruamel.yaml.clib" in deps and "platform_machine" in deps


def test_make_bench_writes_where_git_ignores_unless_saved(tmp_path: Path) -> None:
    from benchmarks.run import RESULTS

    assert make_n("bench", tmp_path)[-1].endswith("-m benchmarks.run ")
    assert make_n("bench", tmp_path, "SAVE=1")[-1].endswith("--output benchmarks/results.md")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(RESULTS)], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, f"{RESULTS} is not ignored by git"


def test_parse_benchmark_measures_both_parsers() -> None:
    from benchmarks.parse import TYPICAL, parse
    from benchmarks.report import Report
    from benchmarks.scenarios import Context

    ctx = Context(report=Report([]), targets={}, jobs=0, rounds=1, quick=True,
                  ruby_missing="not needed", log=lambda message: None)
    parse(ctx)
    (section,) = ctx.report.sections
    assert [row[0] for row in section.rows] == [*TYPICAL, "mix (one of each)"]
    fast, pure, speedup = section.rows[-1][2:]
    assert float(pure.replace(",", "")) > 0
    assert float(speedup.rstrip("x")) > 2, (fast, pure)  # libyaml is installed here (CI too)


def test_demo_starts_with_the_worker_and_ends_with_what_to_do_next(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sample_jobs.demo"], capture_output=True,
                         text=True, env=clean_env(), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "will_scan" not in out.stdout + out.stderr  # a 7-row table is no "large backlog"
    first = next(line for line in out.stderr.splitlines() if line.strip())  # the worker's log
    assert "worker.started" in first, first
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("next: write your own handler (sample_jobs/__init__.py"), last
    assert re.search(r"try `.*dj-consumer why \d+ --import sample_jobs`$", last), last
