"""Each config key is declared once; flags, DJ_* variables, files and the README follow from it."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from dj_consumer import settings
from dj_consumer.cli import build_parser
from dj_consumer.cli._parser import _subparsers
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from tests.conftest import ROOT

URL = "sqlite:///jobs.db"


def _help(command: str) -> str:
    return _subparsers(build_parser())[command].format_help()


def test_every_key_is_declared_with_help_and_a_variable() -> None:
    declared = settings.settings()
    assert [s.key for s in declared] == [f.name for f in fields(Config)]
    for s in declared:
        assert s.help and not s.help.endswith("."), s.key
        assert s.env == (None if s.key == "db_config" else f"DJ_{s.key.upper()}")


@pytest.mark.parametrize("command", sorted(settings.settings()[1].commands))
def test_each_command_shows_the_flags_and_variables_it_takes(command: str) -> None:
    text = " ".join(_help(command).split())
    for s in settings.for_command(command):
        for flag in s.flags:
            assert flag in text, (command, flag)
        assert f"[{s.env}]" in text, (command, s.env)


def test_work_takes_every_worker_key_and_defaults_come_from_config() -> None:
    work = {s.key for s in settings.for_command("work")}
    dashboard = {"web_host", "web_port", "web_auth", "web_auth_header"}  # `web` only
    assert {s.key for s in settings.settings() if s.commands == ("web",)} == dashboard
    assert work == {f.name for f in fields(Config)} - {"db_config"} - dashboard
    text = " ".join(_help("work").split())
    assert "(default 14400) [DJ_MAX_RUN_TIME]" in text
    assert "(default 25) [DJ_MAX_ATTEMPTS]" in text


def test_reserve_sql_help_says_what_auto_picks() -> None:
    """The help (and so the README) must agree with Store.strategy, which this pins."""
    from dj_consumer.db import ServerInfo
    from dj_consumer.store import Store

    help_text = next(s.help for s in settings.settings() if s.key == "reserve_sql")
    assert ("auto: skip_locked on PostgreSQL, MariaDB >= 10.6 and MySQL >= 8.0.1, default_sql "
            "elsewhere") in help_text
    store = Store(Config.from_mapping({"database_url": URL}))
    try:
        for dialect, version, skip, expected in [
            ("mysql", "10.11.6-MariaDB", True, "skip_locked"),
            ("mysql", "10.5.2-MariaDB", False, "default_sql"),
            ("mysql", "8.0.36", True, "skip_locked"),
            ("postgresql", "15.4", True, "skip_locked"),
            ("sqlite", "3.40", False, "default_sql"),
        ]:
            store.dialect, store.server = dialect, ServerInfo(dialect, version, skip)
            assert store.strategy == expected, (dialect, version)
    finally:
        store.close()


def test_config_table_is_the_generated_one() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- config-table -->\n(.*?)\n<!-- /config-table -->", doc, re.S)
    assert block, "docs/configuration.md has no <!-- config-table --> block"
    assert block.group(1) == settings.readme_table(), (
        "docs/configuration.md's table drifted from dj_consumer.config: regenerate it with "
        "`python -m dj_consumer.cli._readme`")


def test_readme_command_list_matches_help() -> None:
    from dj_consumer.cli._readme import command_list

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- cli-commands -->\n(.*?)\n<!-- /cli-commands -->", readme, re.S)
    assert block and block.group(1) == command_list()
    top = " ".join(build_parser().format_help().split())
    for line in command_list().splitlines():
        name = line.split("`")[1].split()[1]
        assert f" {name} " in top


def test_env_values_parse_and_unknown_variables_get_a_suggestion() -> None:
    env = {"DJ_CONCURRENCY": "4", "DJ_EXIT_ON_COMPLETE": "yes", "DJ_CONCURENCY": "2",
           "DJ_TEST_MYSQL_URL": "x", "DJ_CONFIG": "f.toml", "DJ_FROBNICATE": "1", "HOME": "/"}
    assert settings.env_values(env) == {"concurrency": 4, "exit_on_complete": True}
    assert settings.unknown_env(env) == [
        "DJ_CONCURENCY is not a dj-consumer setting (did you mean DJ_CONCURRENCY?); it is ignored",
        "DJ_FROBNICATE is not a dj-consumer setting; it is ignored",
    ]


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "dj_consumer.toml"
    path.write_text('database_url = "sqlite:///a.db"\nconcurrency = 3\nqueues = ["mail", "nil"]\n'
                    "max_run_time = 60\nexit_on_complete = true\n")
    file_values = settings.load_file(path)
    cfg = settings.layered(file_values, {}, {})
    assert (cfg.concurrency, cfg.queues, cfg.max_run_time, cfg.exit_on_complete) == \
        (3, ("mail", None), 60.0, True)
    cfg = settings.layered(file_values, {"DJ_CONCURRENCY": "5"}, {"exit_on_complete": False})
    assert (cfg.concurrency, cfg.exit_on_complete) == (5, False)
    cfg = settings.layered(file_values, {"DJ_CONCURRENCY": "5"}, {"concurrency": 7})
    assert cfg.concurrency == 7
    # A URL given by a later layer replaces a file's db_config (and the other way round).
    cfg = settings.layered({"db_config": {"db_name": "x"}}, {"DJ_DATABASE_URL": URL}, {})
    assert cfg.database_url == URL and cfg.db_config is None


def test_config_file_mistakes_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dj_consumer.toml"
    path.write_text('database_url = "sqlite:///a.db"\nconcurency = 3\n')
    with pytest.raises(ConfigError, match=r"dj_consumer.toml: unknown config key 'concurency' "
                                          r"\(did you mean 'concurrency'\?\)"):
        settings.load_file(path)
    path.write_text("concurrency = [\n")
    with pytest.raises(ConfigError, match="is not TOML"):
        settings.load_file(path)
    with pytest.raises(ConfigError, match=r"config file nope\.toml does not exist"):
        settings.find_file("nope.toml")


def test_files_found_without_config(tmp_path: Path) -> None:
    assert settings.find_file(None, tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert settings.find_file(None, tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[tool.dj_consumer]\nconcurrency = 2\n')
    path, table = settings.find_file(None, tmp_path)  # type: ignore[misc]
    assert settings.load_file(path, table) == {"concurrency": 2}
    (tmp_path / "dj_consumer.toml").write_text("concurrency = 4\n")
    assert settings.find_file(None, tmp_path) == (tmp_path / "dj_consumer.toml", None)


def test_mistyped_flag_and_abbreviation(capsys: pytest.CaptureFixture[str]) -> None:
    from dj_consumer.cli._parser import parse

    with pytest.raises(SystemExit) as exit_info:
        parse(build_parser(), ["work", "--concurency", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines() == [
        "dj-consumer work: error: unrecognized argument --concurency; did you mean "
        "--concurrency? (see dj-consumer work --help)"]
    with pytest.raises(SystemExit):
        parse(build_parser(), ["work", "--conc", "2"])  # no abbreviations
    assert "unrecognized argument --conc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(build_parser(), ["stauts"])
    assert "did you mean 'status'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(build_parser(), ["failed", "retry", "--al"])
    assert "did you mean --all?" in capsys.readouterr().err
