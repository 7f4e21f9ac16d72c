"""enqueue's rows without a database: ActiveJob's queue, priority and keyword arguments."""

from __future__ import annotations

import pytest

from dj_consumer import ruby_yaml
from dj_consumer.enqueue import new_job
from dj_consumer.errors import ConfigError


def test_active_job_queue_column_and_queue_name_agree() -> None:
    job = new_job("ReportJob", [1, "x"], shape="active_job")
    data = ruby_yaml.load(job.handler).payload
    assert (job.queue, data["queue_name"], job.priority, data["priority"]) == \
        ("default", "default", 0, None)
    assert data["arguments"] == [1, "x"]
    job = new_job("ReportJob", [], shape="active_job", queue="mail", priority=3)
    data = ruby_yaml.load(job.handler).payload
    assert (job.queue, data["queue_name"], job.priority, data["priority"]) == ("mail", "mail", 3, 3)


def test_keyword_arguments_are_marked_as_rails_marks_them() -> None:
    job = new_job("ReportJob", ["a"], shape="active_job", kwargs={"year": 2026})
    # perform_later("a", year: 2026): the last argument is a hash flagged as keywords.
    assert "_aj_ruby2_keywords" in job.handler and "_aj_symbol_keys" not in job.handler
    assert ruby_yaml.load(job.handler).payload["arguments"] == ["a", {"year": 2026}]


@pytest.mark.parametrize(("payload", "kwargs", "shape", "message"), [
    ({"a": 1}, None, "active_job", "an active_job payload is the argument list"),
    ("text", None, "active_job", "active_job arguments must be a list"),
    ([1], None, "object", "cannot enqueue ReportJob"),
    ({}, {"a": 1}, "object", "keyword arguments are for --as active_job"),
])
def test_mistakes_are_one_line(payload: object, kwargs: dict[str, int] | None, shape: str,
                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        new_job("ReportJob", payload, shape=shape, kwargs=kwargs)
