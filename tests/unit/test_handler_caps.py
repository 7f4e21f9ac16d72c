"""max_handler_bytes / max_handler_values: settings whose defaults are ruby_yaml's, checked
like every other key, and named by the error that fails a job over them."""

from __future__ import annotations

import pytest

from dj_consumer import ruby_yaml
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError, HandlerParseError

URL = "sqlite:///jobs.db"


def test_defaults_are_ruby_yamls() -> None:
    c = Config.from_mapping({"database_url": URL})
    assert c.max_handler_bytes == ruby_yaml.MAX_HANDLER_BYTES == 16 * 1024 * 1024  # mediumtext
    assert c.max_handler_values == ruby_yaml.MAX_NODES == 100_000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_handler_bytes", 0, "max_handler_bytes must be > 0, got 0"),
    ("max_handler_values", -1, "max_handler_values must be > 0, got -1"),
    ("max_handler_bytes", "64k", "max_handler_bytes must be an integer, got str '64k'"),
])
def test_mistakes_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_mapping({"database_url": URL, key: value})


def test_from_env() -> None:
    c = Config.from_env({"DJ_DATABASE_URL": URL, "DJ_MAX_HANDLER_BYTES": "65536",
                         "DJ_MAX_HANDLER_VALUES": "5000"})
    assert (c.max_handler_bytes, c.max_handler_values) == (65536, 5000)


@pytest.mark.parametrize("pure", [False, True])
def test_load_names_the_setting_a_handler_is_over(pure: bool) -> None:
    handler = "--- !ruby/object:Foo\nl:\n" + "- 1\n" * 100  # 103 values: root, key, list, items
    exact = ruby_yaml.load(handler, max_bytes=len(handler), max_values=103, pure=pure)
    assert len(exact.payload["l"]) == 100
    with pytest.raises(HandlerParseError, match=r"is 424 bytes, over the 423 byte limit \(the "
                                                r"max_handler_bytes setting\)"):
        ruby_yaml.load(handler, max_bytes=len(handler) - 1, pure=pure)
    with pytest.raises(HandlerParseError, match=r"more than 102 values .*\(the max_handler_values"):
        ruby_yaml.load(handler, max_values=102, pure=pure)
