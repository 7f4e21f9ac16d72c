"""The delayed_jobs table exactly as Rails' delayed_job_active_record migration creates it.

Used by the demo, the tests and `dj-consumer schema`; production tables come from Rails.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.schema import CreateIndex, CreateTable

from dj_consumer.errors import ConfigError

REQUIRED_COLUMNS = (
    "id",
    "priority",
    "attempts",
    "handler",
    "last_error",
    "run_at",
    "locked_at",
    "failed_at",
    "locked_by",
    "queue",
    "created_at",
    "updated_at",
)

#: Each column as Rails' delayed_job migration declares it (add_column's type and options),
#: for the line that says how to add a missing one back.
RAILS_COLUMNS = {
    "priority": ":integer, default: 0, null: false",
    "attempts": ":integer, default: 0, null: false",
    "handler": ":text",
    "last_error": ":text",
    "run_at": ":datetime",
    "locked_at": ":datetime",
    "failed_at": ":datetime",
    "locked_by": ":string",
    "queue": ":string",
    "created_at": ":datetime",
    "updated_at": ":datetime",
}


def check_columns(conn: Connection, name: str, where: str) -> dict[str, Any]:
    """The columns of the delayed_jobs table `name` by name (as SQLAlchemy's inspector gives
    them). ConfigError, one line that says what to do, when the table or a column Rails'
    migration makes is missing; `where` names the database in that line."""
    try:
        columns = {c["name"]: c for c in inspect(conn).get_columns(name)}
    except NoSuchTableError:
        raise ConfigError(
            f"table {name!r} does not exist in {where}; run Rails' delayed_job migration, or "
            "`dj-consumer schema --create` for a new one") from None
    problem = missing_columns(name, columns)
    if problem is not None:
        raise ConfigError(problem)
    return columns


def missing_columns(name: str, have: Iterable[str]) -> str | None:
    """None when table `name` has every column Rails' migration makes; else one line naming
    the missing ones and the add_column lines that put them back."""
    have = set(have)
    missing = [c for c in REQUIRED_COLUMNS if c not in have]
    if not missing:
        return None
    head = f"table {name!r} has no column {missing[0]!r}" + (
        f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
    if "id" in missing:
        return f"{head}; it is not a delayed_job table (`dj-consumer schema` prints the one " \
               "Rails' migration makes)"
    return f"{head}; it is not a delayed_job table, or its migration is incomplete: add " \
           f"{'it' if len(missing) == 1 else 'them'} as Rails' migration does " \
           f"({add_columns(name, missing)})"


def add_columns(name: str, columns: Iterable[str]) -> str:
    """`add_column :delayed_jobs, :locked_by, :string; …` for the columns (not id) given."""
    return "; ".join(f"add_column :{name}, :{c}, {RAILS_COLUMNS[c]}" for c in columns
                     if c in RAILS_COLUMNS)


def delayed_jobs_table(name: str = "delayed_jobs", metadata: MetaData | None = None) -> Table:
    """create_table :delayed_jobs + add_index [:priority, :run_at], name: "delayed_jobs_priority"."""
    md = metadata or MetaData()
    table = Table(
        name,
        md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("priority", Integer, nullable=False, server_default=text("0")),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("handler", Text, nullable=False),
        Column("last_error", Text),
        Column("run_at", DateTime),
        Column("locked_at", DateTime),
        Column("failed_at", DateTime),
        Column("locked_by", String(255)),
        Column("queue", String(255)),
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
        # Rails' SQLite primary key is `integer PRIMARY KEY AUTOINCREMENT`: an id is never
        # reused after the last row is deleted (the idle prober's MAX(id) grows; on tables
        # without it, it reads the top row's created_at too: wakeup.Prober).
        sqlite_autoincrement=True,
    )
    Index(f"{name}_priority", table.c.priority, table.c.run_at)
    return table


def ddl(bind: Engine, tables: Iterable[Table]) -> list[str]:
    """CREATE TABLE and CREATE INDEX for `tables`, in bind's dialect (`dj-consumer schema`)."""
    out = []
    for table in tables:
        out.append(str(CreateTable(table).compile(bind)).strip())
        out += [str(CreateIndex(index).compile(bind)).strip() for index in table.indexes]
    return out


def existing(bind: Engine, names: Iterable[str]) -> set[str]:
    """Which of the tables `names` exist."""
    with bind.connect() as conn:
        insp = inspect(conn)
        return {name for name in names if insp.has_table(name)}


def column_names(bind: Engine, name: str) -> set[str]:
    """The columns of table `name` (none if it does not exist)."""
    with bind.connect() as conn:
        insp = inspect(conn)
        return {c["name"] for c in insp.get_columns(name)} if insp.has_table(name) else set()


def create(bind: Engine | Connection, name: str = "delayed_jobs", *, drop: bool = False) -> Table:
    table = delayed_jobs_table(name)
    if drop:
        table.drop(bind, checkfirst=True)
    table.create(bind, checkfirst=True)
    return table



def recurring_columns_sql(bind: Engine, name: str = "delayed_jobs", *, cron: bool = True,
                          reoccur: bool = True, have: set[str] | frozenset[str] = frozenset()
                          ) -> list[str]:
    """ALTER TABLE statements for the recurring columns `name` lacks, as their Ruby
    migrations add them (docs/recurring.md): delayed_cron_job's `cron` string, the
    delayed_job fork's `reoccur_in` string and `last_run_at` datetime."""
    quote = bind.dialect.identifier_preparer.quote
    stamp = "TIMESTAMP" if bind.dialect.name == "postgresql" else "DATETIME"
    wanted = ([("cron", "VARCHAR(255)")] if cron else []) + (
        [("reoccur_in", "VARCHAR(255)"), ("last_run_at", stamp)] if reoccur else [])
    return [f"ALTER TABLE {quote(name)} ADD COLUMN {column} {kind}"
            for column, kind in wanted if column not in have]


def add_recurring_columns(bind: Engine, name: str = "delayed_jobs", *, cron: bool = True,
                          reoccur: bool = True) -> list[str]:
    """Add the recurring columns `name` lacks; the statements run."""
    have = {c["name"] for c in inspect(bind).get_columns(name)}
    statements = recurring_columns_sql(bind, name, cron=cron, reoccur=reoccur, have=have)
    with bind.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    return statements
