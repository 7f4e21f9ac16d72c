"""Run records without a database: what a result may be, errors, payload keys, URL redaction."""

from __future__ import annotations

import json

import pytest

import dj_consumer
from dj_consumer.contrib.http_steps import Redactor
from dj_consumer.runs.records import MAX_RESULT_BYTES, ResultError, result_json
from dj_consumer.runs.store import error_fields, payload_fields


def test_a_result_is_json_or_a_clear_error() -> None:
    assert result_json(None) is None
    assert json.loads(result_json({"rows": [1, 2.5, "é", None, True]}) or "") == \
        {"rows": [1, 2.5, "é", None, True]}
    with pytest.raises(ResultError, match=r"cannot be its result: Object of type set is not "
                                          r"JSON serializable \(return what JSON holds"):
        result_json({"ids": {1, 2}})
    with pytest.raises(ResultError, match="Out of range float"):
        result_json(float("nan"))
    with pytest.raises(ResultError, match=f"holds {MAX_RESULT_BYTES:,} at most"):
        result_json("x" * MAX_RESULT_BYTES)


def test_error_fields_keep_the_message_not_the_traceback() -> None:
    assert error_fields(ValueError("bad")) == ("ValueError", "bad")
    assert error_fields(dj_consumer.FailJob("gone")) == ("dj_consumer.errors.FailJob", "gone")
    assert error_fields("boom\nsecond line\nTraceback (most recent call last):\n  File x") == \
        (None, "boom\nsecond line")
    assert error_fields(None) == (None, None)


def test_payload_keys_for_the_record() -> None:
    assert payload_fields({"run_key": 7, "owner_id": "u1", "batch_id": "b", "batch_index": 2}) \
        == {"run_key": "7", "run_owner_id": "u1", "run_batch_id": "b", "run_batch_index": 2}
    active_job = {"job_class": "X", "arguments": [{"run_key": "a"}, 3, {"owner_id": 5}]}
    assert payload_fields(active_job)["run_owner_id"] == "5"
    assert payload_fields(["not", "a", "mapping"])["run_key"] is None
    assert payload_fields({"batch_index": True})["run_batch_index"] is None


def test_urls_lose_userinfo_and_secret_query_values() -> None:
    steps = [{"url": "https://ada:pa%24%24word@api.test:8443/v1/x?token=abc123&page=2",
              "headers": {"X-Api-Key": "key-0000001", "Accept": "json"},
              "body": {"nested": [{"client_secret": "cs-999999"}], "note": "ok"}}]
    r = Redactor(steps, secret_keys=())
    assert r.url(steps[0]["url"]) == \
        "https://api.test:8443/v1/x?token=[REDACTED]&page=2"
    text = "echo pa$$word pa%24%24word key-0000001 cs-999999 abc123 json ok"
    assert r.text(text) == "echo [REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED] json ok"
    assert Redactor([{"headers": {"X-Sig": "abcdef"}}], ["x_sig"]).text("abcdef") == "[REDACTED]"
