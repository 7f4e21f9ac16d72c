"""`dj-consumer work` logs: one renderer for structlog events, handlers' stdlib logging,
SQLAlchemy's --sql-log and warnings; JSON on every line with --log-format json."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import DB, clean_env
from tests.integration.test_protocol import obj

HANDLERS = textwrap.dedent("""
    import logging
    import warnings

    from dj_consumer import job

    log = logging.getLogger("myapp.jobs")

    @job.run("LogJob")
    def run(j):
        log.info("stdlib info from the handler %s", j.id)
        log.debug("stdlib debug from the handler")
        logging.getLogger("some.library").warning("a library warns")
        warnings.warn("a deprecation from the handler", UserWarning)
        j.log.info("handler.structlog")
""")


def work(db: DB, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "logjobs.py").write_text(HANDLERS)
    return subprocess.run(
        [sys.executable, "-m", "dj_consumer.cli", "work", "--database-url", db.url,
         "--table-name", db.table, "--import", "logjobs", "--exit-on-complete",
         "--sleep-delay", "0.05", *flags],
        capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=120)


def test_json_logs_are_json_on_every_line_with_sql_log(db: DB, tmp_path: Path) -> None:
    db.insert(obj("LogJob"))
    db.insert(obj("LogJob"), queue="mail")
    out = work(db, tmp_path, "--log-format", "json", "--sql-log")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines() + out.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every line, or this raises
    names = [e["event"] for e in events]
    assert names.count("job.succeeded") == 2 and "worker.stopped" in names
    sql = [e for e in events if e.get("logger", "").startswith("sqlalchemy.engine")]
    assert any("delayed" in e["event"] or "SELECT" in e["event"].upper() for e in sql), names
    stdlib = [e for e in events if e.get("logger") == "myapp.jobs"]
    assert [e["event"] for e in stdlib] == ["stdlib info from the handler 1",
                                            "stdlib info from the handler 2"]
    assert all(e["level"] == "info" and "timestamp" in e for e in stdlib)
    assert any(e.get("logger") == "some.library" and e["level"] == "warning" for e in events)
    assert any("a deprecation from the handler" in e["event"] for e in events)  # warnings too
    assert not any("stdlib debug" in e["event"] for e in events)
    assert any(e["event"] == "handler.structlog" and e["queue"] is None for e in events)


def test_the_level_applies_to_stdlib_records_and_sql(db: DB, tmp_path: Path) -> None:
    db.insert(obj("LogJob"))
    out = work(db, tmp_path, "--log-format", "json", "--sql-log", "--log-level", "warning")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines()]
    assert events and all(e["level"] in ("warning", "error") for e in events), events
    assert any(e.get("logger") == "some.library" for e in events)


def test_console_logs_say_nil_for_the_nil_queue(db: DB, tmp_path: Path) -> None:
    db.insert(obj("LogJob"))
    out = work(db, tmp_path, "--log-format", "console")
    assert out.returncode == 0, out.stderr
    succeeded = [line for line in out.stderr.splitlines() if "job.succeeded" in line]
    assert len(succeeded) == 1 and "queue=nil" in succeeded[0], out.stderr
    assert "queue=None" not in out.stderr
    assert "stdlib info from the handler 1" in out.stderr
