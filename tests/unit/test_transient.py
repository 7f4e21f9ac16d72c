"""Which database errors are retried (transient) and which are not."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from dj_consumer.db import is_transient


@pytest.mark.parametrize(
    "orig",
    [
        pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"),
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
        psycopg.OperationalError('connection failed: FATAL:  the database system is shutting down'),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        Exception("database is locked"),
        Exception("FATAL:  the database system is starting up"),
    ],
)
def test_transient(orig: Exception) -> None:
    assert is_transient(OperationalError("SELECT 1", {}, orig))


@pytest.mark.parametrize(
    "orig",
    [
        pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
        pymysql.err.OperationalError(1366, "Incorrect string value"),
        psycopg.errors.UndefinedColumn("column x does not exist"),
    ],
)
def test_not_transient(orig: Exception) -> None:
    assert not is_transient(ProgrammingError("SELECT 1", {}, orig))


def test_only_database_errors() -> None:
    assert not is_transient(ValueError("connection failed"))
