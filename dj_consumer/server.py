"""What the store learns about its server at start (Store.check): version, SKIP LOCKED, the
last_error column's size; whether the configured strategy fits it; a lease too short."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.engine import Connection

from dj_consumer.config import LEASE_RENEW_MAX, Config
from dj_consumer.errors import ConfigError

log = structlog.get_logger("dj_consumer.store")


@dataclass(frozen=True)
class ServerInfo:
    dialect: str
    version: str
    skip_locked: bool

    @property
    def mariadb(self) -> bool:
        return self.dialect == "mysql" and "mariadb" in self.version.lower()


def mysql_has_skip_locked(version: str) -> bool:
    """SKIP LOCKED: MariaDB >= 10.6, MySQL >= 8.0.1."""
    numbers = [int(p) for p in version.split("-")[0].split(".")[:3] if p.isdigit()]
    while len(numbers) < 3:
        numbers.append(0)
    major, minor, patch = numbers
    if "mariadb" in version.lower():
        return (major, minor) >= (10, 6)
    return (major, minor, patch) >= (8, 0, 1)


def server_info(conn: Connection, dialect: str) -> ServerInfo:
    if dialect == "sqlite":
        version = conn.execute(text("select sqlite_version()")).scalar_one()
        return ServerInfo("sqlite", str(version), skip_locked=False)
    if dialect == "postgresql":
        version = conn.execute(text("show server_version")).scalar_one()
        return ServerInfo("postgresql", str(version), skip_locked=True)
    version = str(conn.execute(text("select version()")).scalar_one())
    return ServerInfo("mysql", version, skip_locked=mysql_has_skip_locked(version))


def check_strategy(wanted: str, server: ServerInfo) -> None:
    """reserve_sql set by hand must work on this server."""
    fits = {
        "update_returning": server.dialect == "postgresql",
        "update_limit": server.dialect == "mysql",
        "skip_locked": server.skip_locked,
    }.get(wanted, True)
    if not fits:
        raise ConfigError(f"reserve_sql {wanted!r} does not work on {server.dialect} "
                          f"{server.version}; leave it at 'auto'")


def warn_if_short_lease(cfg: Config) -> None:
    if cfg.uses_leases and cfg.lock_timeout < 2 * LEASE_RENEW_MAX:
        log.warning("lease.short_lock_timeout", lock_timeout=cfg.lock_timeout,
                    lease_worker_ids=list(cfg.lease_ids),
                    hint=f"a peer of these worker_ids that renews less often than every "
                         f"{cfg.lock_timeout:g}s (other deployments renew every "
                         f"{LEASE_RENEW_MAX:g}s at most) would lose live jobs to this worker; "
                         "give every one of them the same lock_timeout, or this worker a "
                         "worker_id of its own")


def text_limit(dialect: str, column_type: Any) -> int:
    if dialect != "mysql":
        return 1 << 20
    name = type(column_type).__name__.upper()
    return {"TINYTEXT": 255, "TEXT": 65535, "MEDIUMTEXT": 16777215}.get(name, 1 << 20)


