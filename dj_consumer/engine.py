"""Engines for the store: pools, driver timeouts, and the session settings every connection
of ours starts with (isolation level, lock waits, index paths)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError

#: The shortest client-side wait for a reply (seconds): above MySQL's default 50 s lock wait,
#: so no legitimate statement is cut.
MIN_IO_TIMEOUT = 60.0


def io_timeout(config: Config) -> float:
    """How long a statement may wait for the server before the driver gives up: long enough
    for any legitimate statement, short enough that a renewal stuck on a dead connection is
    retried on a fresh one well within lock_timeout (a renewal is due every lock_timeout/4)."""
    return max(MIN_IO_TIMEOUT, config.lock_timeout / 2)


def make_engine(url: URL, config: Config, *, autocommit: bool) -> Engine:
    """An engine for `url` (autocommit, or transactions at READ COMMITTED on MySQL)."""
    dialect = url.get_backend_name()
    timeout = io_timeout(config)
    kwargs = _engine_args(url, config, dialect, autocommit=autocommit, timeout=timeout)
    try:
        engine = create_engine(url, **kwargs)
    except (ImportError, ModuleNotFoundError) as exc:
        hint = " (pip install 'dj_consumer[postgres]')" if dialect == "postgresql" else ""
        raise ConfigError(f"the driver for {url.drivername} is not installed: {exc}{hint}") from None
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ConfigError(f"database_url {safe_url(url)} is not usable: {exc}") from None
    _session_setup(engine, dialect, autocommit=autocommit, timeout=timeout)
    return engine


def _engine_args(url: URL, config: Config, dialect: str, *, autocommit: bool,
                 timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"echo": config.sql_log, "pool_pre_ping": True}
    if dialect == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError("database_url for SQLite must name a file (sqlite:///jobs.db), "
                              "an in-memory database cannot be shared with other workers")
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        kwargs["pool_pre_ping"] = False
    else:
        kwargs["pool_size"] = config.concurrency + 2
        kwargs["max_overflow"] = config.concurrency + 2
        kwargs["pool_recycle"] = 3600
    # Timeouts given in the URL win (connect_args would replace them): defaults otherwise.
    connect = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    if dialect in ("mysql", "mariadb"):
        # A socket that went half-open (a dead host, a dropped NAT entry) would otherwise
        # block a statement, a heartbeat's renewal say, forever.
        io = {k: timeout for k in ("read_timeout", "write_timeout") if k not in url.query}
        kwargs["connect_args"] = {**connect, **io}
        if autocommit:
            # Multi-statements let a reserve travel in one round trip (Connections.run_script).
            # FOUND_ROWS is SQLAlchemy's own flag, restated because client_flag replaces it:
            # rowcount must count matched rows, or a renew in the same second reads as lost.
            from pymysql.constants import CLIENT

            kwargs["connect_args"]["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
    if dialect == "postgresql":
        # libpq has no read timeout: keepalives find a dead peer while we wait for a reply,
        # tcp_user_timeout one that stopped acknowledging what we sent.
        kwargs["connect_args"] = {**connect, "keepalives": 1, "keepalives_idle": 30,
                                  "keepalives_interval": 10, "keepalives_count": 3,
                                  "tcp_user_timeout": int(timeout * 1000)}
    if autocommit:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    elif dialect in ("mysql", "mariadb"):
        # READ COMMITTED: a SKIP LOCKED scan keeps no locks on rows it did not take, so it
        # never makes a Ruby worker's UPDATE … LIMIT 1 wait behind rows we skipped.
        kwargs["isolation_level"] = "READ COMMITTED"
    return kwargs


def _session_setup(engine: Engine, dialect: str, *, autocommit: bool, timeout: float) -> None:
    """What every new connection runs first."""
    if dialect in ("mysql", "mariadb") and autocommit:
        # READ COMMITTED for single statements too: Rails' UPDATE … ORDER BY … LIMIT 1 then
        # locks only the row it takes, not every row its scan passed (InnoDB semi-consistent read).
        @event.listens_for(engine, "connect")
        def _read_committed(dbapi_conn: Any, _: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    if dialect in ("mysql", "mariadb"):
        # A lock wait must end on the server (1205, retried) before the client's read_timeout
        # cuts it (an unknown outcome): never wait longer than that, nor than configured.
        @event.listens_for(engine, "connect")
        def _lock_wait(dbapi_conn: Any, _: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = "
                            f"LEAST(@@innodb_lock_wait_timeout, {max(1, int(timeout) - 10)})")

    if dialect == "postgresql":
        # The reserve must walk the (priority, run_at) index and stop at the first rows it can
        # take. The planner, guessing that few rows pass the handler LIKE filter (and having
        # no statistics at all on a young table), prefers a sequential scan and a sort of the
        # whole table: ~1 ms per reserve at 3,000 rows, linear in the backlog. Every statement
        # we send is an index lookup, so this session never wants a sequential scan.
        @event.listens_for(engine, "connect")
        def _index_paths(dbapi_conn: Any, _: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET enable_seqscan TO off")
                # No statement of ours waits forever (PostgreSQL's default): a lock wait ends
                # as 55P03 (retried), anything else at io_timeout; a value set by the DBA or
                # the URL stands.
                for name, limit in (("lock_timeout", max(1, int(timeout) - 10)),
                                    ("statement_timeout", int(timeout))):
                    cur.execute("SELECT set_config(%s, %s, false) WHERE current_setting(%s) = '0'",
                                (name, f"{limit}s", name))
            dbapi_conn.commit()

    if dialect == "sqlite" and autocommit:
        # SQLite: driver-level autocommit, so each statement is its own transaction.
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 30000")


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)
