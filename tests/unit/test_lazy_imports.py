"""The package and the CLI parser load without SQLAlchemy (fast `dj-consumer --help`), and the
lazily loaded names stay what they were."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, clean_env

PROBE = """
import sys
import dj_consumer
from dj_consumer import job, Job, FailJob
from dj_consumer.cli import build_parser
build_parser().format_help()
heavy = sorted(m for m in ("sqlalchemy", "structlog", "dj_consumer.worker", "ruamel.yaml")
               if m in sys.modules)
assert not heavy, heavy
import dj_consumer.enqueue   # the submodule must not shadow the function
from dj_consumer import enqueue, make_worker, Worker, Config
assert callable(enqueue) and enqueue.__module__ == "dj_consumer.enqueue", enqueue
assert make_worker.__module__ == "dj_consumer.worker" and Config.__name__ == "Config"
print("ok")
"""


def test_help_needs_no_sqlalchemy_and_lazy_names_resolve() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=clean_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
