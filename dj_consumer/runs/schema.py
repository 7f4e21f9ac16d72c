"""The run records and batch tables, declared once: SQLAlchemy tables and the Rails migration.

`delayed_job_runs` holds one row per delayed_jobs id (its primary key is that id, so a Rails
controller polls it with one primary-key read). `delayed_job_batches` holds one row per
enqueue_batch, and `delayed_job_batches_parts` one row per finished part (the marker that makes
finishing a part idempotent, and where each part's errors are kept until the batch completes).
Both are optional: the worker looks for the runs table once at start (store.detect).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeEngine

#: Run states. `running` while an attempt runs; `rescheduled` after a failed attempt that
#: will be retried; `interrupted` when shutdown unlocked it (no attempt spent); the last
#: three are final.
STATES = ("running", "succeeded", "rescheduled", "failed", "cancelled", "interrupted")
FINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Col:
    """One column: its kind (bigint, integer, string, id36, text, mediumtext, datetime),
    whether it may be NULL, and its default (a SQL literal)."""

    name: str
    kind: str
    null: bool = True
    default: str | None = None


RUN_COLUMNS = (
    Col("job_id", "bigint", null=False),
    Col("name", "string", null=False, default="''"),
    Col("queue", "string"),
    Col("state", "string", null=False),
    Col("attempts", "integer", null=False, default="0"),
    Col("progress_current", "bigint"),
    Col("progress_total", "bigint"),
    Col("progress_stage", "string"),
    Col("result", "mediumtext"),
    Col("checkpoint", "mediumtext"),  # what an attempt keeps for the next (http_steps' steps)
    Col("error_class", "string"),
    Col("error_message", "text"),
    Col("run_key", "string"),
    Col("owner_id", "string"),
    Col("batch_id", "id36"),
    Col("batch_index", "integer"),
    Col("locked_by", "string"),
    Col("started_at", "datetime"),
    Col("finished_at", "datetime"),
    Col("cancel_requested_at", "datetime"),  # a Rails app may write it to cancel
    Col("created_at", "datetime"),
    Col("updated_at", "datetime"),
)
RUN_INDEXES: dict[str, tuple[str, ...]] = {"run_key": ("run_key",), "owner_id": ("owner_id",),
               "state_updated_at": ("state", "updated_at"), "batch": ("batch_id", "batch_index")}

BATCH_COLUMNS = (
    Col("batch_id", "id36", null=False),
    Col("name", "string", null=False),
    Col("queue", "string"),
    Col("on_complete", "string"),
    Col("total", "integer", null=False, default="0"),  # items
    Col("total_batches", "integer", null=False, default="0"),  # parts (delayed_jobs rows)
    Col("done_batches", "integer", null=False, default="0"),
    Col("processed", "integer", null=False, default="0"),
    Col("skipped", "integer", null=False, default="0"),
    Col("errored", "integer", null=False, default="0"),
    Col("error_items", "mediumtext"),  # JSON [{"id", "message"}], written when the batch completes
    Col("on_complete_job_id", "bigint"),
    Col("completed_at", "datetime"),
    Col("created_at", "datetime"),
    Col("updated_at", "datetime"),
)
BATCH_INDEXES: dict[str, tuple[str, ...]] = {"completed_at": ("completed_at",)}

PART_COLUMNS = (
    Col("batch_id", "id36", null=False),
    Col("batch_index", "integer", null=False),
    Col("job_id", "bigint"),
    Col("processed", "integer", null=False, default="0"),
    Col("skipped", "integer", null=False, default="0"),
    Col("errored", "integer", null=False, default="0"),
    Col("error_items", "mediumtext"),  # JSON [{"id", "message"}] of this part
    Col("finished_at", "datetime"),
)


def _type(kind: str) -> TypeEngine[Any]:
    types: dict[str, TypeEngine[Any]] = {
        "bigint": BigInteger(), "integer": Integer(), "string": String(255),
        "id36": String(36), "text": Text(), "datetime": DateTime(),
        "mediumtext": Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"),
    }
    return types[kind]


def _columns(cols: tuple[Col, ...]) -> list[Column[Any]]:
    return [Column(c.name, _type(c.kind), nullable=c.null,
                   server_default=text(c.default) if c.default is not None else None)
            for c in cols]


def parts_name(batches_table: str) -> str:
    return f"{batches_table}_parts"


def runs_table(name: str = "delayed_job_runs", metadata: MetaData | None = None) -> Table:
    table = Table(name, metadata or MetaData(), *_columns(RUN_COLUMNS),
                  PrimaryKeyConstraint("job_id", name=f"{name}_pkey"))
    for suffix, cols in RUN_INDEXES.items():
        Index(f"index_{name}_on_{suffix}", *(table.c[c] for c in cols))
    return table


def batches_table(name: str = "delayed_job_batches", metadata: MetaData | None = None) -> Table:
    table = Table(name, metadata or MetaData(), *_columns(BATCH_COLUMNS),
                  PrimaryKeyConstraint("batch_id", name=f"{name}_pkey"))
    for suffix, cols in BATCH_INDEXES.items():
        Index(f"index_{name}_on_{suffix}", *(table.c[c] for c in cols))
    return table


def parts_table(batches: str = "delayed_job_batches", metadata: MetaData | None = None) -> Table:
    name = parts_name(batches)
    return Table(name, metadata or MetaData(), *_columns(PART_COLUMNS),
                 PrimaryKeyConstraint("batch_id", "batch_index", name=f"{name}_pkey"))


def tables(runs: str, batches: str) -> list[Table]:
    md = MetaData()
    return [runs_table(runs, md), batches_table(batches, md), parts_table(batches, md)]


def create(bind: Engine | Connection, runs: str = "delayed_job_runs",
           batches: str = "delayed_job_batches", *, drop: bool = False) -> list[str]:
    """Create the runs, batches and parts tables that are missing; their names, created or not."""
    made = tables(runs, batches)
    for table in made:
        if drop:
            table.drop(bind, checkfirst=True)
        table.create(bind, checkfirst=True)
    return [t.name for t in made]


# -- the Rails migration ------------------------------------------------------------------------

_RAILS_TYPES = {
    "bigint": "bigint", "integer": "integer", "string": "string", "id36": "string",
    "text": "text", "mediumtext": "text", "datetime": "datetime",
}


def _rails_column(c: Col, *, primary: bool = False) -> str:
    opts = []
    if c.kind == "id36":
        opts.append("limit: 36")
    if c.kind == "mediumtext":
        opts.append("size: :medium")  # MySQL mediumtext (16 MiB); text elsewhere
    if not c.null:
        opts.append("null: false")
    if primary:
        # `default: nil` keeps Rails from making an integer key AUTO_INCREMENT / bigserial:
        # the id is the delayed_jobs row's.
        opts.append("primary_key: true, default: nil" if c.kind == "bigint" else "primary_key: true")
    elif c.default is not None:
        opts.append("default: " + ('""' if c.default == "''" else c.default))
    tail = "".join(f", {o}" for o in opts)
    return f"      t.{_RAILS_TYPES[c.kind]} :{c.name}{tail}"


def _rails_table(name: str, cols: tuple[Col, ...], key: tuple[str, ...],
                 indexes: Mapping[str, tuple[str, ...]]) -> list[str]:
    head = f"    create_table :{name}, id: false do |t|" if len(key) == 1 else \
        f"    create_table :{name}, primary_key: {_rails_list(key)} do |t|"
    return [
        head,
        *(_rails_column(c, primary=len(key) == 1 and c.name == key[0]) for c in cols),
        "    end",
        *(f"    add_index :{name}, {_rails_list(ix)}, name: \"index_{name}_on_{suffix}\""
          for suffix, ix in indexes.items()),
    ]


def rails_migration(runs: str = "delayed_job_runs", batches: str = "delayed_job_batches",
                    *, version: str = "6.1") -> str:
    """The Rails migration that makes the same three tables (`dj-consumer schema --runs --rails`)."""
    lines = [
        f"class CreateDelayedJobRuns < ActiveRecord::Migration[{version}]",
        "  def change",
        "    # One row per delayed_jobs id, which is its primary key: JobRun.find(id) polls it.",
        *_rails_table(runs, RUN_COLUMNS, ("job_id",), RUN_INDEXES),
        "",
        *_rails_table(batches, BATCH_COLUMNS, ("batch_id",), BATCH_INDEXES),
        "",
        *_rails_table(parts_name(batches), PART_COLUMNS, ("batch_id", "batch_index"), {}),
        "  end",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _rails_list(cols: tuple[str, ...]) -> str:
    return f":{cols[0]}" if len(cols) == 1 else "[" + ", ".join(f":{c}" for c in cols) + "]"
