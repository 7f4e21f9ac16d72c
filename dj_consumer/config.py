"""Configuration: a frozen dataclass built from a mapping or DJ_* environment variables.

Every mistake is reported as one ConfigError line that names the key and what would be right.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url

from dj_consumer.errors import ConfigError

#: Every renewing worker refreshes its leases at least this often (seconds, by the database's
#: clock), whatever its own settings: so a peer of another deployment with lock_timeout >=
#: 2 x LEASE_RENEW_MAX never takes a live lease (README "Lease renewal").
LEASE_RENEW_MAX = 60.0


@dataclass(frozen=True, kw_only=True)
class Config:
    worker_id: str = "py"
    database_url: str | None = None
    db_config: Mapping[str, Any] | None = None
    table_name: str = "delayed_jobs"
    queues: tuple[str | None, ...] | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    max_attempts: int = 25
    max_run_time: float = 14400.0
    sleep_delay: float = 5.0
    read_ahead: int = 5
    exit_on_complete: bool = False
    destroy_failed_jobs: bool = False
    concurrency: int = 1
    sql_log: bool = False
    log_format: str = "console"
    # Beyond delayed_job (README "Lease renewal"): refresh locked_at while a job runs, so a
    # crashed Python worker's rows come back after lock_timeout instead of max_run_time.
    heartbeat_interval: float = 60.0
    lock_timeout: float = 300.0
    shutdown_timeout: float | None = None
    # The worker_ids of lease-renewing (Python) workers: their locks expire after lock_timeout.
    # Matched exactly ("{id} host:…" or "{id}:{slot} host:…"), so no Ruby worker's name can
    # pass for one by sharing a prefix. Default: this worker's own worker_id.
    lease_worker_ids: tuple[str, ...] | None = None
    # auto: update_returning on PostgreSQL, skip_locked on MariaDB >= 10.6 / MySQL >= 8.0.1,
    # update_limit on older MySQL, default_sql on SQLite (see README, "Row protocol").
    reserve_sql: str = "auto"
    # Lock up to this many rows per reserve and delete successes together (README: "Batching").
    reserve_batch: int = 1
    # Caps on one handler (README "Large jobs"); a job over them fails to load. Ruby has none:
    # the column's type bounds it (MySQL text 64 KiB, mediumtext 16 MiB). ruby_yaml's defaults.
    max_handler_bytes: int = 16 * 1024 * 1024
    max_handler_values: int = 100_000
    hostname: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.database_url is None and self.db_config is None:
            raise ConfigError(
                "database_url is required (e.g. mysql+pymysql://root@127.0.0.1/app, "
                "postgresql+psycopg://localhost/app, sqlite:///jobs.db), or give db_config"
            )
        if self.database_url is not None and self.db_config is not None:
            raise ConfigError("give database_url or db_config, not both")
        _positive("max_attempts", self.max_attempts)
        _positive("max_run_time", self.max_run_time)
        _positive("read_ahead", self.read_ahead)
        _positive("concurrency", self.concurrency)
        _positive("reserve_batch", self.reserve_batch)
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("lock_timeout", self.lock_timeout)
        _positive("max_handler_bytes", self.max_handler_bytes)
        _positive("max_handler_values", self.max_handler_values)
        if self.sleep_delay < 0:
            raise ConfigError(f"sleep_delay must be >= 0 seconds, got {self.sleep_delay!r}")
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            raise ConfigError(f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout!r}")
        if self.heartbeat_interval >= self.lock_timeout:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be shorter than "
                f"lock_timeout ({self.lock_timeout}s), or live jobs would look abandoned"
            )
        strategies = ("auto", "update_returning", "update_limit", "skip_locked", "default_sql")
        if self.reserve_sql not in strategies:
            raise ConfigError(f"reserve_sql must be one of {', '.join(strategies)}, got {self.reserve_sql!r}")
        if self.log_format not in ("console", "json"):
            raise ConfigError(f"log_format must be 'console' or 'json', got {self.log_format!r}")
        if (
            self.min_priority is not None
            and self.max_priority is not None
            and self.min_priority > self.max_priority
        ):
            raise ConfigError(
                f"min_priority ({self.min_priority}) is above max_priority ({self.max_priority})"
            )
        if not self.worker_id or any(c.isspace() for c in self.worker_id):
            raise ConfigError(f"worker_id must be a non-empty word without spaces, got {self.worker_id!r}")
        _not_rubys("worker_id", self.worker_id)
        for wid in self.lease_worker_ids or ():
            if not wid or any(c.isspace() for c in wid):
                raise ConfigError(f"lease_worker_ids must be worker_ids without spaces, got {wid!r}")
            _not_rubys("lease_worker_ids", wid)
        if not self.table_name:
            raise ConfigError("table_name must not be empty")
        _ = self.url  # validates database_url / db_config now, not at first use

    @property
    def url(self) -> URL:
        """The SQLAlchemy URL, from database_url or the dj-consumer style db_config."""
        if self.database_url is not None:
            try:
                return make_url(self.database_url)
            except Exception as exc:
                raise ConfigError(
                    f"database_url {self.database_url!r} is not a database URL ({exc}); "
                    "expected e.g. mysql+pymysql://user:pass@host:3306/db"
                ) from None
        assert self.db_config is not None
        cfg = dict(self.db_config)
        unknown = set(cfg) - {"user", "password", "host", "port", "db_name"}
        if unknown or "db_name" not in cfg:
            raise ConfigError(
                "db_config takes user, password, host, port and db_name (db_name required); "
                f"got {sorted(cfg)}"
            )
        user = quote(str(cfg.get("user", "root")), safe="")
        password = cfg.get("password")
        auth = user + (":" + quote(str(password), safe="") if password else "")
        host = cfg.get("host", "127.0.0.1")
        try:
            port = f":{int(cfg['port'])}" if cfg.get("port") else ""
        except (TypeError, ValueError):
            raise ConfigError(f"db_config port must be a number, got {cfg['port']!r}") from None
        return make_url(f"mysql+pymysql://{auth}@{host}{port}/{cfg['db_name']}")

    @property
    def lease_ids(self) -> tuple[str, ...]:
        return self.lease_worker_ids or (self.worker_id,)

    @property
    def uses_leases(self) -> bool:
        """Do Python peers recover each other's locks sooner than Ruby's horizon?"""
        return self.lock_timeout < self.max_run_time

    def is_lease_holder(self, locked_by: str) -> bool:
        """Does this locked_by belong to a lease-renewing worker (see lease_worker_ids)?"""
        ident = locked_by.split(" host:", 1)[0]
        return ident.split(":", 1)[0] in self.lease_ids and " host:" in locked_by

    @property
    def heartbeat(self) -> float:
        """The renewal period actually used: well under every horizon that could expire a live
        lock (lock_timeout for Python peers, max_run_time for everyone), whatever was set, and
        never above LEASE_RENEW_MAX, which peers of other deployments rely on."""
        return min(self.heartbeat_interval, self.lock_timeout / 4, self.max_run_time / 4,
                   LEASE_RENEW_MAX)

    def worker_name(self, slot: int | None = None) -> str:
        """locked_by for one slot: "{worker_id}[:{slot}] host:{hostname} pid:{pid}"."""
        ident = self.worker_id if slot is None else f"{self.worker_id}:{slot}"
        return f"{ident} host:{self.hostname} pid:{os.getpid()}"

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Config) -> Config:
        if isinstance(mapping, Config):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"config must be a mapping of SPEC keys, got {type(mapping).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            hint = _closest(unknown[0], known)
            raise ConfigError(
                f"unknown config key {unknown[0]!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            )
        values = dict(mapping)
        ids = values.get("lease_worker_ids")
        if isinstance(ids, str):
            values["lease_worker_ids"] = tuple(i.strip() for i in ids.split(",") if i.strip()) or None
        elif isinstance(ids, list | set | frozenset):
            values["lease_worker_ids"] = tuple(ids) or None
        if "queues" in values and values["queues"] is not None:
            q = values["queues"]
            if isinstance(q, str):  # "mail,default" or "mail,nil" (nil: the nil queue, as in Ruby)
                q = [None if s.strip() == "nil" else s.strip() for s in q.split(",") if s.strip()]
            if not isinstance(q, list | tuple | set | frozenset):
                raise ConfigError(f"queues must be a list of queue names, got {type(q).__name__}")
            values["queues"] = tuple(q) or None
        for key in ("max_run_time", "sleep_delay", "heartbeat_interval", "lock_timeout",
                    "shutdown_timeout"):
            if isinstance(values.get(key), int) and not isinstance(values.get(key), bool):
                values[key] = float(values[key])
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """DJ_DATABASE_URL, DJ_QUEUES=a,b, DJ_CONCURRENCY=4 … mirror the keys; overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("DJ_" + f.name.upper())
            if raw is not None and f.name in ("queues", "lease_worker_ids"):
                values[f.name] = raw
            elif raw is not None and f.name != "db_config":
                values[f.name] = _from_text(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _not_rubys(key: str, worker_id: str) -> None:
    """Ruby's daemons lock rows as "delayed_job[.N] host:… pid:…" (script/delayed_job names its
    processes delayed_job, delayed_job.0, delayed_job.<identifier>): with such a worker_id,
    their live locks would read as our leases and be taken after lock_timeout."""
    if worker_id == "delayed_job" or worker_id.startswith("delayed_job."):
        raise ConfigError(f"{key} {worker_id!r} is the name Ruby's delayed_job daemons lock rows "
                          "with; their live jobs would look like our leases. Pick another, e.g. 'py'")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def _base_types(annotation: Any) -> tuple[str, bool]:
    text = str(annotation).replace(" ", "")
    optional = text.endswith("|None")
    return text.removesuffix("|None"), optional


def _check_type(key: str, value: Any, annotation: Any) -> None:
    base, optional = _base_types(annotation)
    if value is None:
        if optional:
            return
        raise ConfigError(f"{key} must not be empty")
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "Mapping[str,Any]": isinstance(value, Mapping),
        "tuple[str|None,...]": isinstance(value, tuple)
        and all(v is None or isinstance(v, str) for v in value),
        "tuple[str,...]": isinstance(value, tuple) and all(isinstance(v, str) for v in value),
    }.get(base, True)
    if not ok:
        want = {
            "str": "a string",
            "int": "an integer",
            "float": "a number of seconds",
            "bool": "true or false",
            "Mapping[str,Any]": "a mapping",
            "tuple[str|None,...]": "a list of queue names",
            "tuple[str,...]": "a list of worker_ids",
        }
        raise ConfigError(
            f"{key} must be {want.get(base, base)}, got {type(value).__name__} {value!r}"
        )


def _from_text(key: str, raw: str, annotation: Any) -> Any:
    base, optional = _base_types(annotation)
    if optional and raw == "":
        return None
    try:
        if base == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"DJ_{key.upper()} must be {base}, got {raw!r}") from None
    return raw


def _closest(word: str, candidates: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(candidates), n=1)
    return match[0] if match else None
