"""Every command turns every operational problem into one line and exit 2, never a traceback.

Command x kind of error: refused port, unknown host, no answer within the connect timeout,
wrong user or password, unknown database (real MariaDB and PostgreSQL), missing table and
missing column (SQLite, MariaDB, PostgreSQL). `work` runs through the real entry point (it
installs signal handlers); the others through cli.main in this process, plus one subprocess
per command to pin the exit code and stderr of the installed program.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url

from dj_consumer.cli import main
from tests.conftest import DB, ROOT, clean_env, server_url

COMMANDS: dict[str, list[str]] = {
    "schema": ["schema", "--create"],
    "enqueue": ["enqueue", "Ping"],
    "jobs": ["jobs"],
    "failed": ["failed"],
    "why": ["why", "1"],
    "parse": ["parse", "--id", "1"],
    "check": ["check"],
    "status": ["status"],
    "work": ["work", "--import", "sample_jobs", "--exit-on-complete"],
    "web": ["web", "--port", "0"],  # checks the table before it listens
}
#: The other commands and actions. They reach the database through the same one-line path
#: (cli._run.store), so each meets a subset of the connection kinds, every database's missing
#: table and missing column, and the installed program.
MORE_COMMANDS: dict[str, list[str]] = {
    "failed-show": ["failed", "show", "1"],
    "failed-retry": ["failed", "retry", "--all"],
    "failed-delete": ["failed", "delete", "1", "--yes"],
    "schedule": ["schedule", "Tick", "--cron", "*/5 * * * *"],
    "schedules": ["schedules"],
    "runs": ["runs"],
    "cancel": ["cancel", "1"],
}
ALL_COMMANDS = {**COMMANDS, **MORE_COMMANDS}


@pytest.fixture(autouse=True)
def _no_dj_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DJ_* settings from the developer's shell; logging put back after main() set it."""
    import os

    for name in [n for n in os.environ if n.startswith("DJ_")]:
        monkeypatch.delenv(name)
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "dj-consumer"]:
        root.removeHandler(handler)
    logging.captureWarnings(False)


def run(command: str, url: str, table: str = "delayed_jobs",
        capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    argv = [*ALL_COMMANDS[command], "--database-url", url, "--table-name", table]
    if command == "work" or capsys is None:
        proc = subprocess.run([sys.executable, "-m", "dj_consumer.cli", *argv], capture_output=True,
                              text=True, env=clean_env(), cwd=ROOT, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, expect: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dj-consumer: error: "), err
    assert expect in lines[0], err


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _url(backend: str, tmp_path: Path, **changes: object) -> str:
    url = make_url(server_url(backend, tmp_path)).set(**changes)  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False)


CONNECTION_KINDS = [
    ("refused-mariadb", "mariadb", {"port": 1}, "connection refused by 127.0.0.1:1"),
    ("refused-postgresql", "postgresql", {"port": 1}, "connection refused by 127.0.0.1:1"),
    ("unknown-host", "mariadb", {"host": "nohost.invalid"}, "host 'nohost.invalid' is unknown"),
    ("unknown-host-postgresql", "postgresql", {"host": "nohost.invalid"},
     "host 'nohost.invalid' is unknown"),
    # A server that never answers (a listener that accepts nothing: the kernel completes the
    # TCP handshake, the database's greeting never comes), within a 1 s connect timeout. An
    # unroutable address would do the same on most networks, but not in every sandbox.
    ("no-answer", "mariadb", {"host": "127.0.0.1", "port": "SILENT",
                              "query": {"connect_timeout": "1", "read_timeout": "1"}},
     "no answer from 127.0.0.1:SILENT within the connect timeout"),
    ("no-answer-postgresql", "postgresql", {"host": "127.0.0.1", "port": "SILENT",
                                            "query": {"connect_timeout": "1"}},
     "no answer from 127.0.0.1:SILENT within the connect timeout"),
    ("wrong-password", "mariadb", {"username": "root", "password": "wrong-pw"},
     "access denied for user 'root' (wrong user or password)"),
    ("unknown-user-postgresql", "postgresql", {"username": "dj_no_such_role"},
     "access denied for user 'dj_no_such_role' (wrong user or password)"),
    ("unknown-database", "mariadb", {"database": "dj_no_such_db"},
     "database 'dj_no_such_db' does not exist on 127.0.0.1"),
    ("unknown-database-postgresql", "postgresql", {"database": "dj_no_such_db"},
     "database 'dj_no_such_db' does not exist on 127.0.0.1"),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("kind", "backend", "changes", "expect"), CONNECTION_KINDS,
                         ids=[k[0] for k in CONNECTION_KINDS])
def test_connection_problems_are_one_line(command: str, kind: str, backend: str,
                                          changes: dict[str, object], expect: str,
                                          tmp_path: Path, silent_port: int,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if changes.get("port") == "SILENT":
        changes = {**changes, "port": silent_port}
        expect = expect.replace("SILENT", str(silent_port))
    code, _, err = run(command, _url(backend, tmp_path, **changes), capsys=capsys)
    assert_one_line(code, err, expect)
    assert "wrong-pw" not in err  # the password is never printed


MORE_KINDS = [k for k in CONNECTION_KINDS if k[0] in (
    "refused-mariadb", "refused-postgresql", "wrong-password", "unknown-database-postgresql")]


@pytest.mark.parametrize("command", list(MORE_COMMANDS))
@pytest.mark.parametrize(("kind", "backend", "changes", "expect"), MORE_KINDS,
                         ids=[k[0] for k in MORE_KINDS])
def test_connection_problems_are_one_line_for_every_action(
        command: str, kind: str, backend: str, changes: dict[str, object], expect: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(command, _url(backend, tmp_path, **changes), capsys=capsys)
    assert_one_line(code, err, expect)
    assert "wrong-pw" not in err


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c != "check"])
def test_a_missing_table_is_one_line(command: str, db: DB,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"{db.table}_nope"
    code, out, err = run(command, db.url, missing, capsys)
    if command == "schema":  # schema --create makes it: not an error
        assert code == 0 and f"table {missing} created" in out, err
        schema_drop(db, missing)
        return
    if command == "runs":  # reads the run records table only (docs/runs.md "Job runs")
        assert_one_line(code, err, "there is no run records table 'delayed_job_runs'")
        return
    assert_one_line(code, err, f"table '{missing}' does not exist")


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c not in ("check", "runs")])
def test_a_missing_column_is_one_line(command: str, db: DB,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} DROP COLUMN locked_by"))
    code, _, err = run(command, db.url, db.table, capsys)
    # Every command, cancel too, names the table and says how to add the column back.
    assert_one_line(code, err, f"table '{db.table}' has no column 'locked_by'")
    assert f"add_column :{db.table}, :locked_by, :string" in err


def test_check_reports_table_problems_as_findings(db: DB, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("check", db.url, f"{db.table}_nope", capsys)
    assert code == 2 and f"ERROR table '{db.table}_nope' does not exist" in out
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} DROP COLUMN locked_by"))
    code, out, _ = run("check", db.url, db.table, capsys)
    assert code == 2 and f"ERROR table '{db.table}' has no column locked_by" in out


def schema_drop(db: DB, name: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {name}"))


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c != "work"])
def test_the_installed_program_prints_one_line_too(command: str, tmp_path: Path) -> None:
    code, _, err = run(command, "mysql+pymysql://root@127.0.0.1:1/test?connect_timeout=2")
    assert_one_line(code, err, "connection refused by 127.0.0.1:1")


def test_bad_arguments_and_files_are_one_line(sqlite_db: DB, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "dj_consumer.cli", "parse", "/nonexistent"],
                          capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=60)
    assert_one_line(proc.returncode, proc.stderr, "cannot use /nonexistent: No such file")
    proc = subprocess.run([sys.executable, "-m", "dj_consumer.cli", "jobs", "--limit", "-1",
                           "--database-url", sqlite_db.url], capture_output=True, text=True,
                          env=clean_env(), cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "argument --limit: must be 0 or more, got -1" in proc.stderr
    base = ["--database-url", sqlite_db.url, "--table-name", sqlite_db.table]
    for argv, expect in [
        (["enqueue", "Ping", "--payload", "@/nonexistent.json"], "cannot use /nonexistent.json"),
        (["enqueue", "Ping", "--as", "active_job", "--payload", '{"a": 1}'],
         "an active_job payload is the argument list"),
        (["enqueue", "Ping", "--payload", "[1]"], "cannot enqueue Ping"),
        (["failed", "retry"], "give row ids, or --all"),
        (["failed", "list", "--since", "yesterday"], "--since 'yesterday' is neither"),
        (["work", "--config", str(tmp_path / "none.toml")], "config file"),
    ]:
        code = main([*argv, *base])
        assert_one_line(code, capsys.readouterr().err, expect)


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_a_value_too_long_names_the_column_and_its_limit(
        backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import make_db

    for db in make_db(backend, tmp_path):
        base = ["--database-url", db.url, "--table-name", db.table]
        code = main(["enqueue", "Ping", "--queue", "q" * 300, *base])
        assert_one_line(code, capsys.readouterr().err,
                        "the queue is 300 characters; column queue (varchar(255)) holds at most "
                        "255 characters")
        if backend == "mariadb":  # Rails' MySQL migration: handler TEXT, 65,535 bytes
            code = main(["enqueue", "Ping", "--payload", '{"blob": "%s"}' % ("x" * 70_000), *base])
            assert_one_line(code, capsys.readouterr().err, "column handler (TEXT) holds at most "
                                                            "65,535 bytes")
        assert db.count() == 0
