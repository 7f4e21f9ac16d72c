"""The glue that puts rubydj-pyworker beside dj and Ruby in `make bench` (benchmarks/peer.py):
the rows it is given, the SQL that points it at the table under test, and how its run's
result is read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peer import (
    DELAY_HANDLER,
    RECEIVER,
    delay_handler,
    result_of,
    search_path_env,
    view_sql,
)
from benchmarks.procs import BenchError
from dj_consumer.ruby_yaml import load

# `Delayed::PerformableMethod.new(User.create!(name: "a"), :noop, []).to_yaml`, printed by
# delayed_job 4.1.9 + ActiveRecord 6.1 on Ruby 3.1.
RUBY_WROTE = """\
--- !ruby/object:Delayed::PerformableMethod
object: !ruby/object:User
  concise_attributes:
  - !ruby/object:ActiveModel::Attribute::FromDatabase
    name: id
    value_before_type_cast: 1
  - !ruby/object:ActiveModel::Attribute::FromDatabase
    name: name
    value_before_type_cast: a
  new_record: false
  active_record_yaml_version: 2
method_name: :noop
args: []
"""


def test_the_rows_are_byte_for_byte_what_ruby_writes() -> None:
    assert delay_handler("User", 1, "a", "noop") == RUBY_WROTE


def test_dj_names_the_rows_user_noop() -> None:
    parsed = load(DELAY_HANDLER)
    assert parsed.name == "User#noop"
    assert parsed.payload["method_name"] == "noop"


def test_pyworker_finds_the_receiver_class_on_the_second_line() -> None:
    # pyworker 1.2.1's Job.from_row: the class it looks up among its registered Job subclasses.
    match = re.compile("object: !ruby/object:(.+)").match(DELAY_HANDLER.splitlines()[1])
    assert match and match.group(1) == RECEIVER


def test_pyworker_reads_the_table_under_test_through_a_view_on_its_search_path() -> None:
    assert view_sql("s1", "dj_bench_delay_abc") == [
        "CREATE SCHEMA s1", "CREATE VIEW s1.delayed_jobs AS SELECT * FROM dj_bench_delay_abc"]
    assert search_path_env("s1")["PGOPTIONS"] == "-c search_path=s1"


def test_a_full_run_is_a_timing() -> None:
    out = "noise\n" + json.dumps({"jobs": 10, "failed": 0, "seconds": 0.5, "cpu": 0.25,
                                  "error": None}) + "\n"
    timing = result_of(out, 10)
    assert (timing.jobs, timing.rate, timing.cpu_us) == (10, 20.0, 25000.0)


def test_a_short_run_says_why_with_pyworkers_first_error() -> None:
    out = json.dumps({"jobs": 0, "failed": 10, "seconds": 0.5, "cpu": 0.1,
                      "error": "ValueError: Unsupported Job: None"})
    with pytest.raises(BenchError, match=r"ran 0 of 10 jobs \(10 failed\): ValueError: Unsupported"):
        result_of(out, 10)
    with pytest.raises(BenchError, match="printed nothing"):
        result_of("", 10)


def test_the_latency_variant_runs_pyworker_on_its_own_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.peer as peer
    from benchmarks.env import target

    monkeypatch.setattr(peer, "venv_python", lambda log=print: ("/venv/bin/python", None))
    variant, missing = peer.pickup_variant()
    assert variant is not None and missing is None
    assert variant.queue == "default"
    assert variant.handler(7).splitlines()[1] == f"object: !ruby/object:{RECEIVER}"
    variant.stamps = None
    argv, env = variant.command(target("postgresql"), variant)
    assert argv[:4] == ["/venv/bin/python", "-I", str(peer.DRIVER), "pickup"]
    assert env["PGOPTIONS"].startswith("-c search_path=dj_bench_pyw_")


def test_without_its_venv_pyworker_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.peer as peer

    monkeypatch.setattr(peer, "venv_python", lambda log=print: (None, "pip install failed: x"))
    assert peer.pickup_variant() == (None, "pip install failed: x")


def test_a_peer_that_dies_in_the_latency_scenario_is_a_row_not_a_crash(tmp_path: Path) -> None:
    from benchmarks.pickup import Variant, _wait

    stamps = tmp_path / "stamps"
    stamps.write_text("")
    peer = Variant("rubydj-pyworker", optional=True, stamps=stamps, proc=subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('no psycopg2\\n'); sys.exit(3)"],
        stderr=subprocess.PIPE))
    with peer.proc:
        _wait("ready", [peer], lambda v: False, 30)
    assert peer.failed == "exited 3 before ready: no psycopg2"

    ours = Variant("dj", stamps=stamps, proc=subprocess.Popen(
        [sys.executable, "-c", "raise SystemExit(4)"], stderr=subprocess.PIPE))
    with ours.proc, pytest.raises(RuntimeError, match="dj exited 4 before ready"):
        _wait("ready", [ours], lambda v: False, 30)
