"""Config through the real entry point: a file, DJ_* variables and flags, in that order; unknown
variables reported; Rails' URL parameters and adapter names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dj_consumer.clock import SystemClock
from tests.conftest import DB, ROOT, clean_env
from tests.integration.test_protocol import obj

JOBS = 'from dj_consumer import job\n\n@job.run("J")\ndef j(job): pass\n'


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = clean_env(**env)
    environ["PYTHONPATH"] = f"{ROOT}:{cwd}"
    return subprocess.run([sys.executable, "-m", "dj_consumer.cli", *args], capture_output=True,
                          text=True, env=environ, cwd=cwd, timeout=120)


def test_file_then_env_then_flags(sqlite_db: DB, tmp_path: Path) -> None:
    (tmp_path / "cfgjobs.py").write_text(JOBS)
    (tmp_path / "dj_consumer.toml").write_text(
        f'database_url = "{sqlite_db.url}"\ntable_name = "{sqlite_db.table}"\n'
        'queues = ["other"]\nexit_on_complete = true\nsleep_delay = 0.05\nlog_format = "json"\n')
    mail = sqlite_db.insert(obj("J"), queue="mail")
    # The file's queues: nothing to run in "other".
    out = cli("work", "--import", "cfgjobs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sqlite_db.row(mail) is not None
    assert all(json.loads(line) for line in out.stderr.splitlines())  # the file's log_format
    # DJ_QUEUES beats the file; the flag beats DJ_QUEUES.
    out = cli("work", "--import", "cfgjobs", "--queues", "other", cwd=tmp_path, DJ_QUEUES="mail")
    assert out.returncode == 0 and sqlite_db.row(mail) is not None, out.stderr
    out = cli("work", "--import", "cfgjobs", cwd=tmp_path, DJ_QUEUES="mail")
    assert out.returncode == 0 and sqlite_db.row(mail) is None, out.stderr


def test_pyproject_table_and_explicit_file(sqlite_db: DB, tmp_path: Path) -> None:
    failed = sqlite_db.insert(obj("J"), failed_at=SystemClock().now(), attempts=1, last_error="x")
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "app"\n\n[tool.dj_consumer]\ndatabase_url = "{sqlite_db.url}"\n'
        f'table_name = "{sqlite_db.table}"\n')
    out = cli("failed", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [j["id"] for j in json.loads(out.stdout)["jobs"]] == [failed]
    other = tmp_path / "other.toml"
    other.write_text(f'database_url = "{sqlite_db.url}"\ntable_name = "nope"\n')
    out = cli("failed", "--config", str(other), cwd=tmp_path)
    assert out.returncode == 2 and "table 'nope' does not exist" in out.stderr
    out = cli("failed", cwd=tmp_path, DJ_CONFIG=str(other))
    assert out.returncode == 2 and "table 'nope' does not exist" in out.stderr
    other.write_text(f'database_url = "{sqlite_db.url}"\ntable = "x"\n')
    out = cli("failed", "--config", str(other), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"dj-consumer: error: {other}: unknown config key 'table' "
                                  "(did you mean 'table_name'?)")


def test_unknown_variables_and_rails_url_parameters_are_reported(sqlite_db: DB,
                                                                 tmp_path: Path) -> None:
    out = cli("jobs", "--database-url", sqlite_db.url + "?pool=5&timeout=5000",
              "--table-name", sqlite_db.table, cwd=tmp_path, DJ_CONCURENCY="2",
              DJ_LOG_FORMAT="json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines()]
    assert {"event": "config.unknown_env", "level": "warning",
            "problem": "DJ_CONCURENCY is not a dj-consumer setting (did you mean "
                       "DJ_CONCURRENCY?); it is ignored"}.items() <= events[0].items()
    assert events[1]["event"] == "config.database_url"
    assert events[1]["note"] == "ignored Rails-only parameters pool=5, timeout=5000"


def test_rails_adapter_name_is_one_line_with_the_url_to_use(tmp_path: Path) -> None:
    out = cli("status", "--database-url", "mysql2://app:pw@db/app?encoding=utf8mb4", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "dj-consumer: error: database_url scheme mysql2: is Rails' adapter name or names no "
        "driver; did you mean mysql+pymysql://app:***@db/app?encoding=utf8mb4 ?")
