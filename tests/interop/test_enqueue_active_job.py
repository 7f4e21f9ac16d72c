"""`dj-consumer enqueue --as active_job` writes what Rails' DelayedJobAdapter writes.

Real Rails 6.1 enqueues `ReportJob.perform_later(...)` (with queue, priority, keyword
arguments); dj-consumer enqueues the same into the same table. The rows must be the same to
Ruby: the columns, `job_data` as YAML.load_dj reads it (but for job_id and enqueued_at, which
differ per enqueue), Delayed::Job#name, the arguments ReportJob#perform receives, and the
handler text itself, byte for byte (job_id and enqueued_at aside).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, clean_env
from tests.interop.conftest import Interop
from tests.interop.helpers import ruby_url

pytestmark = pytest.mark.ruby

SCRIPT = Path(__file__).resolve().parent / "ruby" / "active_job_enqueue.rb"
SPECS: list[dict[str, Any]] = [
    {"args": [2026, "monthly"]},
    {"args": [1], "queue": "reports", "priority": 3},
    {"args": [], "kwargs": {"year": 2026, "kind": "full"}},
    {"args": ["a", {"nested": [1, 2.5, None, True]}], "kwargs": {"n": 1}, "queue": "mail"},
]


def ruby(interop: Interop, command: str, *extra: str, stdin: str = "") -> list[dict[str, Any]]:
    proc = subprocess.run(["ruby", str(SCRIPT), command, "--url", ruby_url(interop.url),
                           "--table", interop.table, *extra], input=stdin, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def ours(interop: Interop, spec: dict[str, Any]) -> int:
    argv = ["enqueue", "ReportJob", "--as", "active_job", "--json",
            "--payload", json.dumps(spec["args"]), "--database-url", interop.url,
            "--table-name", interop.table]
    if spec.get("kwargs"):
        argv += ["--kwargs", json.dumps(spec["kwargs"])]
    if spec.get("queue"):
        argv += ["--queue", spec["queue"]]
    if spec.get("priority") is not None:
        argv += ["--priority", str(spec["priority"])]
    proc = subprocess.run([sys.executable, "-m", "dj_consumer.cli", *argv], capture_output=True,
                          text=True, env=clean_env(), cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert re.fullmatch(r"ReportJob \[[0-9a-f-]{36}\] from DelayedJob\(\w+\) with arguments: .*",
                        out["name"]), out
    return int(out["id"])


def masked(job_data: dict[str, Any]) -> dict[str, Any]:
    assert re.fullmatch(r"[0-9a-f-]{36}", job_data["job_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job_data["enqueued_at"])
    return {**job_data, "job_id": "X", "enqueued_at": "X"}


def masked_text(handler: str) -> str:
    handler, ids = re.subn(r"(?m)^(  job_id: )\S+$", r"\1X", handler)
    handler, times = re.subn(r"(?m)^(  enqueued_at: )\S+$", r"\1X", handler)
    assert ids == times == 1, handler
    return handler


def test_enqueue_as_active_job_matches_rails(interop: Interop) -> None:
    theirs = ruby(interop, "enqueue", stdin=json.dumps(SPECS))
    mine = [ours(interop, spec) for spec in SPECS]
    performed = {r["id"]: r for r in ruby(interop, "perform", "--ids",
                                          ",".join(str(i) for i in [r["id"] for r in theirs] + mine))}
    for spec, rails, my_id in zip(SPECS, theirs, mine, strict=True):
        us = performed[my_id]
        assert (us["queue"], us["priority"], us["run_at_set"]) == \
            (rails["queue"], rails["priority"], rails["run_at_set"]), spec
        assert us["queue"] == (spec.get("queue") or "default")
        assert masked(us["job_data"]) == masked(performed[rails["id"]]["job_data"]), spec
        assert us["performed"] == performed[rails["id"]]["performed"], spec
        assert us["performed"]["kwargs"] == (spec.get("kwargs") or {})
        assert masked_text(us["handler"]) == masked_text(rails["handler"]), spec
        # Delayed::Job#name, job_id aside, is Rails' too.
        assert re.sub(r"\[.*?\]", "[]", us["name"]) == re.sub(r"\[.*?\]", "[]", rails["name"])
