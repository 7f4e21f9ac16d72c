"""database_url as Rails writes it: adapter names refused with the URL to use, pool settings
dropped, encoding and friends renamed for our drivers."""

from __future__ import annotations

import pytest

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from dj_consumer.urls import resolve


@pytest.mark.parametrize(("given", "suggestion"), [
    ("mysql2://app:s3cret@db:3306/app?pool=5", "mysql+pymysql://app:***@db:3306/app?pool=5"),
    ("trilogy://app@db/app", "mysql+pymysql://app@db/app"),
    ("mysql://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test"),
    ("postgres://app@db/app", "postgresql+psycopg://app@db/app"),
    ("postgresql://app@db/app?sslmode=require", "postgresql+psycopg://app@db/app?sslmode=require"),
    ("sqlite3:db/production.sqlite3", "sqlite:///db/production.sqlite3"),
])
def test_rails_adapter_names_say_which_url_to_use(given: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(given)
    assert str(info.value).endswith(f"did you mean {suggestion} ?")
    assert "s3cret" not in str(info.value)


def test_rails_parameters_are_dropped_or_renamed() -> None:
    url, notes = resolve("mysql+pymysql://app@db/app?pool=5&encoding=utf8mb4&reconnect=true"
                         "&variables[sql_mode]=TRADITIONAL&connect_timeout=3&socket=/tmp/m.sock")
    assert dict(url.query) == {"charset": "utf8mb4", "connect_timeout": "3",
                               "unix_socket": "/tmp/m.sock"}
    assert notes == [
        "ignored Rails-only parameters pool=5, reconnect=true, variables[sql_mode]=TRADITIONAL",
        "renamed encoding → charset, socket → unix_socket",
    ]
    url, notes = resolve("postgresql+psycopg://app@db/app?encoding=unicode&pool=5"
                         "&schema_search_path=app,public&prepared_statements=false")
    assert dict(url.query) == {"client_encoding": "unicode",
                               "options": "-c search_path=app,public"}
    assert notes[0] == "ignored Rails-only parameters pool=5, prepared_statements=false"
    assert resolve("sqlite:///jobs.db?timeout=5000")[0].query == {}
    assert resolve("mysql+pymysql://app@db/app")[1] == []


def test_unknown_parameters_and_tls_requirements_are_errors() -> None:
    with pytest.raises(ConfigError, match="'conect_timeout' is not understood by PyMySQL "
                                          r"\(did you mean 'connect_timeout'\?\)"):
        resolve("mysql+pymysql://app@db/app?conect_timeout=3")
    with pytest.raises(ConfigError, match="'sslmod' is not understood by libpq"):
        resolve("postgresql+psycopg://app@db/app?sslmod=require")
    with pytest.raises(ConfigError, match="ssl_mode=REQUIRED is mysql2's"):
        resolve("mysql+pymysql://app@db/app?ssl_mode=REQUIRED")
    assert resolve("mysql+pymysql://app@db/app?ssl_mode=DISABLED")[0].query == {}


def test_config_uses_the_resolved_url() -> None:
    cfg = Config.from_mapping({"database_url": "mysql+pymysql://app@db/app?pool=5&encoding=utf8"})
    assert cfg.url.render_as_string() == "mysql+pymysql://app@db/app?charset=utf8"
    assert cfg.url_notes == ["ignored Rails-only parameters pool=5", "renamed encoding → charset"]
    with pytest.raises(ConfigError, match="did you mean mysql\\+pymysql://app@db/app"):
        Config.from_mapping({"database_url": "mysql2://app@db/app"})
