"""Run records and batches as plain data, and the JSON a result must be."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from dj_consumer.errors import DJConsumerError
from dj_consumer.runs.schema import FINAL_STATES

#: A result larger than this is refused (MySQL's mediumtext holds 16 MiB; a record a Rails
#: app polls several times a second should stay small).
MAX_RESULT_BYTES = 1 << 20
#: Errored items kept per part, and in a batch's summary; the counts stay exact.
MAX_ERROR_ITEMS = 1000
#: Characters of one item's error message that are kept.
MAX_ERROR_MESSAGE = 500


class ResultError(DJConsumerError):
    """The handler's return value cannot be stored as the run's result."""


class RunTimeout(DJConsumerError):
    """The job did not finish in time."""


class RunNotFound(DJConsumerError):
    """There is no such job and no run record for it."""


def result_json(value: Any) -> str | None:
    """A handler's return value as the run record's `result` (None stays NULL). Anything else
    than JSON's own values (dict with str keys, list, str, int, float, bool, None) is a
    ResultError naming what was found: the worker turns it into a failed attempt."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ResultError(
            f"the job's return value cannot be its result: {exc} (return what JSON holds: "
            "dict with string keys, list, str, int, float, bool or None)") from None
    size = len(text.encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        raise ResultError(f"the job's return value is {size:,} bytes of JSON; a result holds "
                          f"{MAX_RESULT_BYTES:,} at most (store large output elsewhere and "
                          "return where)")
    return text


@dataclass(frozen=True, kw_only=True)
class Run:
    """One delayed_job_runs row. `result` and `checkpoint` are decoded JSON."""

    job_id: int
    name: str
    queue: str | None
    state: str
    attempts: int
    progress_current: int | None = None
    progress_total: int | None = None
    progress_stage: str | None = None
    result: Any = None
    checkpoint: Any = None
    error_class: str | None = None
    error_message: str | None = None
    run_key: str | None = None
    owner_id: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    locked_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Succeeded, failed for good, or cancelled: the job will not run again."""
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Run:
        values = dict(row)
        for key in ("result", "checkpoint"):
            values[key] = _decoded(values.get(key))
        for key in ("job_id", "attempts", "progress_current", "progress_total", "batch_index"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        return cls(**values)


@dataclass(frozen=True)
class ErrorItem:
    """One item of a batch part whose processing raised."""

    id: Any
    message: str


@dataclass
class PartSummary:
    """What one part of a batch did with its items (the worker's j.track fills it)."""

    processed: int = 0
    skipped: int = 0
    errored: list[ErrorItem] = field(default_factory=list)

    def error(self, item_id: Any, message: str) -> None:
        self.errored.append(ErrorItem(_plain(item_id), message[:MAX_ERROR_MESSAGE]))

    def items_json(self) -> str | None:
        kept = [{"id": e.id, "message": e.message} for e in self.errored[:MAX_ERROR_ITEMS]]
        return json.dumps(kept, ensure_ascii=False, default=str) if kept else None


@dataclass(frozen=True, kw_only=True)
class Batch:
    """One delayed_job_batches row; `error_items` once complete (before: see runs.batch)."""

    batch_id: str
    name: str
    queue: str | None
    on_complete: str | None
    total: int
    total_batches: int
    done_batches: int
    processed: int
    skipped: int
    errored: int
    error_items: list[dict[str, Any]]
    on_complete_job_id: int | None
    completed_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

    def summary(self) -> dict[str, Any]:
        """The on_complete job's payload: what the batch did, with every errored item kept."""
        return {"batch_id": self.batch_id, "name": self.name, "total": self.total,
                "batches": self.total_batches, "processed": self.processed,
                "skipped": self.skipped, "errored": self.errored,
                "errors": list(self.error_items)}

    def as_dict(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Batch:
        values = dict(row)
        values["error_items"] = _decoded(values.get("error_items")) or []
        return cls(**values)


def merged_errors(texts: Sequence[str | None]) -> list[dict[str, Any]]:
    """The parts' error lists, in part order, up to MAX_ERROR_ITEMS."""
    items: list[dict[str, Any]] = []
    for text in texts:
        items.extend(_decoded(text) or [])
        if len(items) >= MAX_ERROR_ITEMS:
            return items[:MAX_ERROR_ITEMS]
    return items


def _decoded(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text  # written by hand, not JSON: shown as it is


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
