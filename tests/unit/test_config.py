"""Config: defaults from SPEC §2, and one clear message per mistake."""

from __future__ import annotations

import os

import pytest

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError

URL = "sqlite:///jobs.db"


def test_defaults_match_the_spec_and_ruby() -> None:
    c = Config.from_mapping({"database_url": URL})
    assert c.worker_id == "py"
    assert c.table_name == "delayed_jobs"
    assert c.queues is None
    assert (c.min_priority, c.max_priority) == (None, None)
    assert c.max_attempts == 25
    assert c.max_run_time == 14400
    assert c.sleep_delay == 5
    assert c.idle_poll == 0.1
    assert c.read_ahead == 5
    assert c.exit_on_complete is False
    assert c.destroy_failed_jobs is False
    assert c.concurrency == 1
    assert c.sql_log is False
    assert c.log_format == "console"


def test_locked_by_format() -> None:
    c = Config.from_mapping({"database_url": URL, "worker_id": "py-1", "hostname": "box"})
    assert c.worker_name() == f"py-1 host:box pid:{os.getpid()}"
    assert c.worker_name(3) == f"py-1:3 host:box pid:{os.getpid()}"


def test_db_config_builds_a_mysql_url() -> None:
    c = Config.from_mapping({"db_config": {"user": "app", "password": "p@ss", "host": "db",
                                           "port": 3307, "db_name": "prod"}})
    assert c.url.render_as_string(hide_password=False) == "mysql+pymysql://app:p%40ss@db:3307/prod"


def test_queues_accepts_a_comma_string_and_nil_queue() -> None:
    assert Config.from_mapping({"database_url": URL, "queues": "a, b"}).queues == ("a", "b")
    assert Config.from_mapping({"database_url": URL, "queues": ["a", None]}).queues == ("a", None)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"database_url": URL, "concurency": 2}, "unknown config key 'concurency' (did you mean 'concurrency'?)"),
        ({"database_url": URL, "concurrency": "2"}, "concurrency must be an integer, got str '2'"),
        ({"database_url": URL, "concurrency": 0}, "concurrency must be > 0"),
        ({"database_url": URL, "idle_poll": -1}, "idle_poll must be >= 0 seconds (0 turns it off)"),
        ({"database_url": URL, "exit_on_complete": "yes"}, "exit_on_complete must be true or false"),
        ({"database_url": URL, "max_run_time": "4h"}, "max_run_time must be a number of seconds"),
        ({"database_url": URL, "log_format": "xml"}, "log_format must be 'console' or 'json'"),
        ({"database_url": URL, "min_priority": 5, "max_priority": 1}, "min_priority (5) is above max_priority (1)"),
        ({}, "database_url is required"),
        ({"database_url": "nope"}, "database_url 'nope' is not a database URL"),
        ({"database_url": URL, "db_config": {"db_name": "x"}}, "not both"),
        ({"db_config": {"host": "x"}}, "db_name required"),
        ({"database_url": URL, "worker_id": "a b"}, "worker_id must be a non-empty word"),
        ({"database_url": URL, "heartbeat_interval": 600}, "must be shorter than lock_timeout"),
        # Ruby's daemons lock as "delayed_job[.N] host:… pid:…": our lease format exactly.
        ({"database_url": URL, "worker_id": "delayed_job"}, "worker_id 'delayed_job' is the name"),
        ({"database_url": URL, "worker_id": "delayed_job.2"}, "worker_id 'delayed_job.2' is the name"),
        ({"database_url": URL, "worker_id": "delayed_job.mail"}, "is the name Ruby's delayed_job"),
        ({"database_url": URL, "lease_worker_ids": "py,delayed_job.0"},
         "lease_worker_ids 'delayed_job.0' is the name"),
    ],
)
def test_mistakes_name_the_key(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(mapping)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_from_env_mirrors_the_keys() -> None:
    env = {"DJ_DATABASE_URL": URL, "DJ_CONCURRENCY": "4", "DJ_EXIT_ON_COMPLETE": "true",
           "DJ_MAX_RUN_TIME": "60", "DJ_QUEUES": "mail,default", "DJ_MIN_PRIORITY": ""}
    c = Config.from_env(env)
    assert (c.concurrency, c.exit_on_complete, c.max_run_time) == (4, True, 60.0)
    assert c.queues == ("mail", "default")
    assert Config.from_env(env, concurrency=2).concurrency == 2
    with pytest.raises(ConfigError, match="DJ_CONCURRENCY must be int, got 'many'"):
        Config.from_env({"DJ_DATABASE_URL": URL, "DJ_CONCURRENCY": "many"})


@pytest.mark.parametrize(("text", "queues"), [
    ("mail,nil", ("mail", None)),
    ("mail, ,default,", ("mail", "default")),  # empty names are dropped, never the nil queue
    ("nil", (None,)),
])
def test_queues_flag_and_env_share_one_rule(monkeypatch: pytest.MonkeyPatch, text: str,
                                            queues: tuple[str | None, ...]) -> None:
    from dj_consumer.cli import build_parser
    from dj_consumer.cli._run import build_config

    def config(args: object) -> Config:
        return build_config(args)[0]  # type: ignore[arg-type]

    monkeypatch.setenv("DJ_DATABASE_URL", URL)
    parser = build_parser()
    monkeypatch.delenv("DJ_QUEUES", raising=False)
    assert config(parser.parse_args(["work", "--queues", text])).queues == queues
    monkeypatch.setenv("DJ_QUEUES", text)
    assert config(parser.parse_args(["work"])).queues == queues
    assert Config.from_env().queues == queues
    # The flag wins over the variable.
    assert config(parser.parse_args(["work", "--queues", "other"])).queues == ("other",)


@pytest.mark.parametrize("worker_id", ["delayed_jobs", "delayed_job-py", "py.delayed_job", "dj"])
def test_names_merely_like_rubys_daemons_are_fine(worker_id: str) -> None:
    assert Config.from_mapping({"database_url": URL, "worker_id": worker_id}).worker_id == worker_id


def test_every_renewing_worker_renews_at_least_every_lease_renew_max() -> None:
    """Peers in other deployments may recover leases after as little as 2 x LEASE_RENEW_MAX
    (docs/operations.md "Lease renewal"), whatever this worker's own heartbeat_interval and lock_timeout."""
    from dj_consumer.config import LEASE_RENEW_MAX

    c = Config.from_mapping({"database_url": URL, "heartbeat_interval": 200, "lock_timeout": 1000})
    assert c.heartbeat <= LEASE_RENEW_MAX == 60
    assert Config.from_mapping({"database_url": URL}).heartbeat == 60
