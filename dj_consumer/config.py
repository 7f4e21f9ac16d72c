"""Configuration: a frozen dataclass built from a mapping, a file, or DJ_* environment variables.

Each key is declared once, below, with its type, default, help text, CLI flag(s) and the
commands that take it; the `dj-consumer` flags, their `[DJ_…]` help, `Config.from_env` and the
configuration table (docs/configuration.md) are all derived from these declarations (dj_consumer.settings).
Every mistake is reported as one ConfigError line that names the key and what would be right.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dj_consumer.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: The commands that talk to the database: each takes the connection keys.
DB_COMMANDS = ("work", "parse", "enqueue", "jobs", "failed", "check", "why", "status", "schema",
               "runs", "cancel", "web", "schedule", "schedules")
#: The commands that read or write run records and batches (docs/runs.md "Job runs").
RUNS_COMMANDS = ("work", "schema", "runs", "cancel", "enqueue", "web")
WORK = ("work",)
#: `why` (and the dashboard's why) judges a row as the worker it is asked about would: pass
#: it the same flags.
SERVES = ("work", "why", "web")
#: The keys only `dj-consumer web` reads.
WEB = ("web",)
_MISSING: Any = dataclasses.MISSING


def setting(default: Any = _MISSING, *, help: str, flags: tuple[str, ...] = (),
            commands: tuple[str, ...] = WORK, metavar: str | None = None,
            choices: tuple[str, ...] | None = None, env: bool = True,
            factory: Callable[[], Any] | None = None, shown_default: str | None = None,
            secret: bool = False) -> Any:
    """One key's declaration: a dataclass field whose metadata the CLI, the environment
    reader and the docs' table are built from (see dj_consumer.settings). A `secret` is
    left out of the Config's repr."""
    meta = {"help": help, "flags": flags, "commands": commands, "metavar": metavar,
            "choices": choices, "env": env, "shown_default": shown_default}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


#: Every renewing worker refreshes its leases at least this often (seconds, by the database's
#: clock), whatever its own settings: so a peer of another deployment with lock_timeout >=
#: 2 x LEASE_RENEW_MAX never takes a live lease (docs/operations.md "Lease renewal").
LEASE_RENEW_MAX = 60.0
#: A supervisor's children are "{worker_id}.{k}", k < MAX_PROCESSES (SQLite's lease GLOBs
#: match up to three digits exactly).
MAX_PROCESSES = 999


@dataclass(frozen=True, kw_only=True)
class Config:
    worker_id: str = setting(
        "py", flags=("--worker-id",), metavar="ID", commands=SERVES,
        help="locked_by prefix: '{worker_id}[:{slot}] host:{hostname} pid:{pid}'")
    database_url: str | None = setting(
        None, flags=("--database-url",), metavar="URL", commands=DB_COMMANDS,
        help="SQLAlchemy URL: mysql+pymysql://user:pw@host/db, postgresql+psycopg://host/db, "
             "sqlite:///file.db; Rails' mysql2://, postgres:// and ?pool=5&encoding=… are "
             "understood")
    db_config: Mapping[str, Any] | None = setting(
        None, env=False, commands=(),
        help="dj-consumer style {user, password, host, port, db_name} → a MySQL URL "
             "(config file or make_worker only)")
    table_name: str = setting(
        "delayed_jobs", flags=("--table-name",), metavar="NAME", commands=DB_COMMANDS,
        help="the delayed_jobs table")
    queues: tuple[str | None, ...] | None = setting(
        None, flags=("--queues", "--queue"), metavar="A,B", commands=(*SERVES, "check"),
        shown_default="all",
        help="only these queues (comma separated, as Ruby's --queues); 'nil' is the nil queue")
    min_priority: int | None = setting(
        None, flags=("--min-priority",), metavar="N", commands=SERVES, shown_default="none",
        help="skip jobs with a lower priority number (Ruby's --min-priority)")
    max_priority: int | None = setting(
        None, flags=("--max-priority",), metavar="N", commands=SERVES, shown_default="none",
        help="skip jobs with a higher priority number (Ruby's --max-priority)")
    max_attempts: int = setting(
        25, flags=("--max-attempts",), metavar="N",
        help="failed attempts before a job fails for good (Ruby's default)")
    max_run_time: float = setting(
        14400.0, flags=("--max-run-time",), metavar="S",
        commands=(*SERVES, "status", "failed", "jobs"),
        help="seconds before j.timed_out is set; also the stale-lock horizon (Ruby's 4 h)")
    sleep_delay: float = setting(
        5.0, flags=("--sleep-delay",), metavar="S", help="seconds to wait when nothing is ready")
    # docs/operations.md "Pick-up latency": what wakes an idle worker before sleep_delay runs out.
    idle_poll: float = setting(
        0.1, flags=("--idle-poll",), metavar="S",
        help="while idle, look this often (seconds) for rows added since (one primary-key-only "
             "query) and wake for one of ours; 0 turns it off (docs/operations.md 'Pick-up latency')")
    read_ahead: int = setting(
        5, flags=("--read-ahead",), metavar="N", help="candidate rows per reserve")
    exit_on_complete: bool = setting(
        False, flags=("--exit-on-complete", "-x"),
        help="exit when no job is ready (Ruby's --exit-on-complete)")
    destroy_failed_jobs: bool = setting(
        False, flags=("--destroy-failed-jobs",),
        help="delete jobs that fail for good (Ruby's default) instead of keeping them with "
             "failed_at")
    concurrency: int = setting(
        1, flags=("--concurrency", "-n"), metavar="N",
        help="jobs in flight in this process; each slot has its own locked_by")
    # Processes as well as threads (docs/deploying.md): a supervisor starts P children,
    # child k locking rows as "{worker_id}.{k}[:{slot}] host:… pid:…".
    processes: str = setting(
        "1", flags=("--processes",), metavar="P|auto",
        help="worker processes (each with `concurrency` slots) under one supervisor; auto: "
             "one per CPU. 1 runs the worker in this process")
    metrics_port: int | None = setting(
        None, flags=("--metrics-port",), metavar="PORT", shown_default="off",
        help="serve /metrics (Prometheus, needs the [metrics] extra), /healthz and /readyz "
             "on this port (0: any free one)")
    metrics_host: str = setting(
        "127.0.0.1", flags=("--metrics-host",), metavar="ADDR",
        help="the address the metrics and health port listens on (0.0.0.0 in a container)")
    sql_log: bool = setting(
        False, flags=("--sql-log",), commands=DB_COMMANDS, help="log every SQL statement")
    log_format: str = setting(
        "console", flags=("--log-format",), choices=("console", "json"), commands=DB_COMMANDS,
        help="dj-consumer's log lines: console for a terminal, json (one object per line) "
             "for log shippers")
    log_level: str = setting(
        "info", flags=("--log-level",), choices=("debug", "info", "warning", "error"),
        commands=DB_COMMANDS,
        help="the lowest level dj-consumer logs, for its own events and stdlib logging alike")
    # The dashboard (docs/web.md "Web dashboard"): loopback unless an auth is given.
    web_host: str = setting(
        "127.0.0.1", flags=("--host",), metavar="ADDR", commands=WEB,
        help="the address `dj-consumer web` listens on; any but a loopback one needs web_auth "
             "or web_auth_header")
    web_port: int = setting(
        8500, flags=("--port",), metavar="N", commands=WEB,
        help="the port `dj-consumer web` listens on (0: any free one)")
    web_auth: str | None = setting(
        None, flags=("--auth",), metavar="KIND:SECRET", commands=WEB, shown_default="none",
        secret=True,
        help="who may use the dashboard: token:SECRET (a login form or 'Authorization: Bearer "
             "SECRET') or basic:USER:PASSWORD (HTTP Basic); prefer DJ_WEB_AUTH to a flag")
    web_auth_header: str | None = setting(
        None, flags=("--auth-header",), metavar="HEADER", commands=WEB, shown_default="none",
        help="a reverse proxy's header naming the signed-in user (e.g. X-Forwarded-User); a "
             "request without it is refused. Only safe when nothing but the proxy reaches "
             "the port")
    # Beyond delayed_job (docs/operations.md "Lease renewal"): refresh locked_at while a job runs, so a
    # crashed Python worker's rows come back after lock_timeout instead of max_run_time.
    heartbeat_interval: float = setting(
        60.0, flags=("--heartbeat-interval",), metavar="S",
        help="seconds between lease renewals of a running job's lock (60 at most, whatever is "
             "set: docs/operations.md 'Lease renewal')")
    lock_timeout: float = setting(
        300.0, flags=("--lock-timeout",), metavar="S", commands=SERVES,
        help="a lease-renewing worker's lock older than this is abandoned (Python peers only; "
             ">= 120 s, or the same in every deployment: docs/operations.md 'Lease renewal')")
    shutdown_timeout: float | None = setting(
        None, flags=("--shutdown-timeout",), metavar="S", shown_default="none",
        help="after SIGTERM, interrupt jobs still running after this many seconds")
    # Matched exactly ("{id} host:…" or "{id}:{slot} host:…"), so no Ruby worker's name can
    # pass for one by sharing a prefix.
    lease_worker_ids: tuple[str, ...] | None = setting(
        None, flags=("--lease-worker-ids",), metavar="A,B", commands=SERVES,
        shown_default="worker_id",
        help="worker_ids whose locks are leases (expire after lock_timeout)")
    reserve_sql: str = setting(
        "auto", flags=("--reserve-sql",),
        choices=("auto", "skip_locked", "default_sql", "update_returning", "update_limit"),
        help="how a row is locked. auto: skip_locked on PostgreSQL, MariaDB >= 10.6 and "
             "MySQL >= 8.0.1, default_sql elsewhere; update_returning (PostgreSQL) and update_limit (MySQL) "
             "are Rails' optimized_sql (docs/protocol.md 'Row protocol')")
    reserve_batch: int = setting(
        1, flags=("--reserve-batch",), metavar="N",
        help="lock up to N rows per reserve and delete the successes together (docs/protocol.md "
             "'Batching')")
    max_handler_bytes: int = setting(
        16 * 1024 * 1024, flags=("--max-handler-bytes",), metavar="N", commands=("work", "web"),
        help="a handler longer than this fails to load (Ruby has no cap: the column bounds it, "
             "MySQL text 64 KiB, mediumtext 16 MiB; docs/protocol.md 'Large jobs')")
    max_handler_values: int = setting(
        100_000, flags=("--max-handler-values",), metavar="N", commands=("work", "web"),
        help="a handler with more values than this (aliases expanded) fails to load")
    cron_zone: str = setting(
        "UTC", flags=("--cron-zone",), metavar="ZONE", commands=(*WORK, "schedule", "schedules"),
        help="the time zone of a cron expression without a zone suffix (Ruby: the worker "
             "process's TZ); docs/recurring.md")
    # Run records and batches (docs/runs.md "Job runs"): optional tables a Rails app can poll.
    runs_table: str = setting(
        "delayed_job_runs", flags=("--runs-table",), metavar="NAME", commands=RUNS_COMMANDS,
        help="the run records table (state, progress, result, cancel); used only when it "
             "exists: `dj-consumer schema --create --runs`")
    batches_table: str = setting(
        "delayed_job_batches", flags=("--batches-table",), metavar="NAME",
        commands=RUNS_COMMANDS,
        help="the batch records table of enqueue_batch (its parts: NAME_parts)")
    run_retention: float = setting(
        14 * 86400.0, flags=("--run-retention",), metavar="S", shown_default="14 days",
        help="seconds a finished run record (and a completed batch) is kept before the "
             "worker prunes it")
    run_progress_interval: float = setting(
        0.5, flags=("--run-progress-interval",), metavar="S",
        help="a job's j.report_progress reaches its run record at most this often (seconds; "
             "written by a background thread, never by the job)")
    hostname: str = setting(
        factory=socket.gethostname, flags=("--hostname",), metavar="HOST",
        shown_default="this host's name", help="the host part of locked_by")

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
        _ = self.process_count  # "auto" or a whole number 1-999
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0-65535, got {self.metrics_port}")
        _positive("reserve_batch", self.reserve_batch)
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("lock_timeout", self.lock_timeout)
        _positive("max_handler_bytes", self.max_handler_bytes)
        _positive("max_handler_values", self.max_handler_values)
        _zone("cron_zone", self.cron_zone)
        if self.sleep_delay < 0:
            raise ConfigError(f"sleep_delay must be >= 0 seconds, got {self.sleep_delay!r}")
        if self.idle_poll < 0:
            raise ConfigError(f"idle_poll must be >= 0 seconds (0 turns it off), got {self.idle_poll!r}")
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            raise ConfigError(f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout!r}")
        if self.heartbeat_interval >= self.lock_timeout:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be shorter than "
                f"lock_timeout ({self.lock_timeout}s), or live jobs would look abandoned"
            )
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                quoted = [repr(c) for c in choices]
                want = " or ".join(quoted) if len(quoted) == 2 else f"one of {', '.join(quoted)}"
                raise ConfigError(f"{f.name} must be {want}, got {getattr(self, f.name)!r}")
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
        for key in ("table_name", "runs_table", "batches_table"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must not be empty")
        _positive("run_retention", self.run_retention)
        _positive("run_progress_interval", self.run_progress_interval)
        _web_settings(self)
        _ = self.url  # validates database_url / db_config now, not at first use

    @property
    def url(self) -> URL:
        """The SQLAlchemy URL, from database_url (Rails' spellings rewritten, see
        dj_consumer.urls) or the dj-consumer style db_config."""
        return self._resolved()[0]

    @property
    def url_notes(self) -> list[str]:
        """What was done to database_url's Rails-only parameters (for one info line)."""
        return self._resolved()[1]

    def _resolved(self) -> tuple[URL, list[str]]:
        from dj_consumer import urls

        if self.database_url is not None:
            return urls.resolve(self.database_url)
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
        return urls.resolve(f"mysql+pymysql://{auth}@{host}{port}/{cfg['db_name']}")

    @property
    def lease_ids(self) -> tuple[str, ...]:
        return self.lease_worker_ids or (self.worker_id,)

    @property
    def uses_leases(self) -> bool:
        """Do Python peers recover each other's locks sooner than Ruby's horizon?"""
        return self.lock_timeout < self.max_run_time

    def is_lease_holder(self, locked_by: str) -> bool:
        """Does this locked_by belong to a lease-renewing worker (see lease_worker_ids)? Its
        id is a lease id, or a supervisor's child of one ("{id}.{k}", k a whole number)."""
        ident = locked_by.split(" host:", 1)[0].split(":", 1)[0]
        parent, dot, k = ident.rpartition(".")
        child = bool(dot) and k.isascii() and k.isdigit() and parent in self.lease_ids
        return (ident in self.lease_ids or child) and " host:" in locked_by

    @property
    def process_count(self) -> int:
        """`processes` as a number: "auto" is the CPUs this process may use."""
        text = str(self.processes).strip()
        if text == "auto":
            return usable_cpus()
        if not text.isdigit() or not 1 <= int(text) <= MAX_PROCESSES:
            raise ConfigError(f"processes must be auto or a whole number 1-{MAX_PROCESSES}, "
                              f"got {self.processes!r}")
        return int(text)

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
            hint = closest(unknown[0], known)
            raise ConfigError(
                f"unknown config key {unknown[0]!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            )
        values = dict(mapping)
        if type(values.get("processes")) is int:  # processes = 2 in a config file
            values["processes"] = str(values["processes"])
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
        for f in fields(cls):  # 60 is as good as 60.0 for a number of seconds
            value = values.get(f.name)
            if base_types(f.type)[0] == "float" and isinstance(value, int) \
                    and not isinstance(value, bool):
                values[f.name] = float(value)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """DJ_DATABASE_URL, DJ_QUEUES=a,b, DJ_CONCURRENCY=4 … mirror the keys; overrides win."""
        from dj_consumer.settings import env_values

        values = env_values(os.environ if environ is None else environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def usable_cpus(cgroup: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a
    container's CPU limit, which the affinity does not show)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open(cgroup) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))  # rounded up
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _not_rubys(key: str, worker_id: str) -> None:
    """Ruby's daemons lock rows as "delayed_job[.N] host:… pid:…" (script/delayed_job names its
    processes delayed_job, delayed_job.0, delayed_job.<identifier>): with such a worker_id,
    their live locks would read as our leases and be taken after lock_timeout."""
    if worker_id == "delayed_job" or worker_id.startswith("delayed_job."):
        raise ConfigError(f"{key} {worker_id!r} is the name Ruby's delayed_job daemons lock rows "
                          "with; their live jobs would look like our leases. Pick another, e.g. 'py'")


def _web_settings(cfg: Config) -> None:
    if not 0 <= cfg.web_port <= 65535:
        raise ConfigError(f"web_port must be 0-65535, got {cfg.web_port}")
    auth = cfg.web_auth
    if auth is not None:
        kind, _, secret = auth.partition(":")
        user, _, password = secret.partition(":")
        if kind == "token" and len(secret) < 16:
            raise ConfigError("web_auth token:SECRET needs a secret of 16 characters or more "
                              "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
        if kind == "basic" and not (user and password):
            raise ConfigError("web_auth basic:USER:PASSWORD needs a user and a password")
        if kind not in ("token", "basic"):
            raise ConfigError("web_auth must be token:SECRET or basic:USER:PASSWORD, got "
                              f"{kind + ':…' if secret else 'no kind'}")
    header = cfg.web_auth_header
    if header is not None and not header.replace("-", "").isalnum():
        raise ConfigError(f"web_auth_header must be a header name like X-Forwarded-User, "
                          f"got {header!r}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def base_types(annotation: Any) -> tuple[str, bool]:
    """(the type without `| None`, whether None is allowed), from an annotation's text."""
    text = str(annotation).replace(" ", "")
    optional = text.endswith("|None")
    return text.removesuffix("|None"), optional


def _check_type(key: str, value: Any, annotation: Any) -> None:
    base, optional = base_types(annotation)
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


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate `word` was probably meant to be (for "did you mean …?")."""
    import difflib

    match = difflib.get_close_matches(word, sorted(candidates), n=1)
    return match[0] if match else None


def _zone(key: str, value: str) -> None:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):
        raise ConfigError(f"{key} must be a time zone name such as UTC or Europe/Berlin, "
                          f"got {value!r}") from None
