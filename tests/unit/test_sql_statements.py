"""sql.py: every statement renders for every dialect, and its binds carry the declared types
(a new time bind that BIND_TYPES does not name would be sent as text: SQLite then compares
strings, and the ready rule breaks)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.types import DateTime, Text

from dj_consumer.config import Config
from dj_consumer.sql import BIND_TYPES, ReserveSQL, Statements

CONFIG = Config(database_url="sqlite:///unused.db", queues=("py", None), min_priority=0,
                max_priority=9, lease_worker_ids=("py",), lock_timeout=300.0)


def statements(dialect: str) -> dict[str, TextClause]:
    sql = Statements(table="delayed_jobs", dialect=dialect, config=CONFIG, skip_locked=True,
                     name_filters=[("%PyJob%",)], names=["PyJob"], mariadb=dialect == "mysql")
    found = {name: v for name, v in vars(sql).items() if isinstance(v, TextClause | TextualSelect)}
    for which in ("plain", "marked"):
        reserve: ReserveSQL = getattr(sql, which)
        found.update({f"{which}.{f.name}": getattr(reserve, f.name) for f in fields(reserve)
                      if f.name != "where"})
    found["claim_pairs(3)"] = sql.claim_pairs(3)
    # A statement that returns rows is the text with its columns: check the text.
    return {k: v.element if isinstance(v, TextualSelect) else v for k, v in found.items()}


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_every_bind_has_its_declared_type(dialect: str) -> None:
    wrong = []
    for name, stmt in statements(dialect).items():
        for bind, param in stmt._bindparams.items():
            looks_like_time = bind in ("now", "stale") or bind.endswith(("_at", "_stale"))
            if looks_like_time and bind not in BIND_TYPES:
                wrong.append(f"{name}: :{bind} is a time but not in BIND_TYPES")
            elif bind in BIND_TYPES and type(param.type) is not type(BIND_TYPES[bind]):
                wrong.append(f"{name}: :{bind} is {param.type!r}")
        for bind in ("handler", "last_error"):
            if bind in stmt._bindparams:
                assert isinstance(stmt._bindparams[bind].type, Text), name
    assert not wrong, "\n".join(wrong)
    assert any(isinstance(p.type, DateTime) for s in statements(dialect).values()
               for p in s._bindparams.values())


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_every_statement_is_whole_sql(dialect: str) -> None:
    for name, stmt in statements(dialect).items():
        text = stmt.text
        assert "{" not in text and "}" not in text, f"{name}: a placeholder left: {text}"
        assert text.split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"), name
