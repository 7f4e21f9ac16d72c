"""Private database servers that a test may stop and start: MariaDB and PostgreSQL 15.

Each lives in its own temporary directory on a spare port, so stopping it never disturbs the
shared servers other tests use. `missing()` says why one cannot run here (binaries absent),
for `unavailable()`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

PG_BIN = Path(os.environ.get("DJ_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, *, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            is_up = s.connect_ex(("127.0.0.1", port)) == 0
        if is_up == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


class PrivateServer:
    backend: str
    url: str

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PrivateMariaDB(PrivateServer):
    """mariadb-install-db + mariadbd on a spare port, root without a password over TCP."""

    backend = "mariadb"

    @staticmethod
    def missing() -> str | None:
        for tool in ("mariadb-install-db", "mariadbd"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                return f"{tool} is not installed (apt-get install mariadb-server)"
        return None

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dj-mariadb-"))
        self.port = spare_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/test"
        self.proc: subprocess.Popen[bytes] | None = None
        root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db", "--no-defaults",
             f"--datadir={self.dir / 'data'}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *root],
            check=True, capture_output=True, timeout=120,
        )
        self.start()
        engine = sa.create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE DATABASE test"))
        engine.dispose()

    def start(self) -> None:
        root = ["--user=root"] if os.geteuid() == 0 else []
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults",
             f"--datadir={self.dir / 'data'}", f"--port={self.port}",
             f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'mysqld.pid'}",
             "--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--innodb-log-file-size=16M", *root],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM, as systemd does), waiting until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.proc = None
        _wait_port(self.port, up=False)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres(PrivateServer):
    """initdb + pg_ctl (as the postgres user when we are root: initdb refuses root)."""

    backend = "postgresql"

    @staticmethod
    def missing() -> str | None:
        if not (PG_BIN / "initdb").exists():
            return f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql-15)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root needs runuser to start PostgreSQL as the postgres user"
        return None

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dj-postgres-"))
        self.port = spare_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run(PG_BIN / "initdb", "-D", str(self.dir / "data"), "--auth=trust", "-U", "postgres")
        self.start()
        engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE test"))
        engine.dispose()

    def _run(self, *args: str | Path) -> None:
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "server.log", "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """pg_ctl stop -m fast: what a restart by the package or an operator does."""
        self._run(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")
        _wait_port(self.port, up=False)

    def close(self) -> None:
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self._run(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
