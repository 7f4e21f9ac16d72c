"""A database error as the one line an operator needs: what is wrong, and where.

Drivers say the same things many ways (PyMySQL's `(2003, "Can't connect … ([Errno 111] …)")`,
libpq's multi-line `connection failed: … FATAL: …`, SQLite's terse messages). `describe`
recognises the usual first-hour mistakes — refused port, unknown host, no answer, wrong
password or user, unknown database, missing table or column, a value too long for its column —
and names them plainly; anything else keeps the driver's own first line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# MySQL/MariaDB error numbers.
_MY_ACCESS = {1045, 1698, 1044}
_MY_UNKNOWN_DB = 1049
_MY_NO_TABLE = 1146
_MY_NO_COLUMN = 1054
_MY_TOO_LONG = 1406
_MY_CONNECT = {2003, 2005, 2006, 2013}


def describe(exc: BaseException, url: URL | None = None) -> str:
    """One line for a database error; `url` (password hidden) says which database."""
    orig = getattr(exc, "orig", None) or exc
    code = _mysql_code(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    message = " ".join(str(orig).split())  # libpq's messages span lines
    where = _where(url)
    text = _connection_problem(code, message, url)
    if text is not None:
        return f"cannot reach the database{where}: {text}"
    text = _schema_problem(code, sqlstate, message)
    if text is not None:
        return text
    return f"database error{where}: {_first_line(orig)}"


def is_connection_error(exc: BaseException) -> bool:
    """Did this fail before any statement ran (host, port, credentials, database name)?"""
    orig = getattr(exc, "orig", None) or exc
    message = " ".join(str(orig).split())
    return _connection_problem(_mysql_code(orig), message, None) is not None


def _connection_problem(code: int | None, message: str, url: URL | None) -> str | None:
    low = message.lower()
    host = _host(url)
    if code in _MY_ACCESS or "password authentication failed" in low \
            or ("role" in low and "does not exist" in low):
        user = url.username if url is not None and url.username else "?"
        return f"access denied for user {user!r} (wrong user or password): {_tail(message)}"
    if code == _MY_UNKNOWN_DB or re.search(r'database "[^"]+" does not exist', message):
        name = url.database if url is not None else "?"
        return f"database {name!r} does not exist on {host} (create it, or fix the URL)"
    if "refused" in low:
        return f"connection refused by {host} (is the server running, on that port?)"
    if "name or service not known" in low or "failed to resolve host" in low \
            or "nodename nor servname" in low or "temporary failure in name resolution" in low:
        return f"host {url.host if url is not None else '?'!r} is unknown (DNS lookup failed)"
    if "timed out" in low or "timeout expired" in low:
        return f"no answer from {host} within the connect timeout (host down, firewall, or " \
               "wrong address)"
    if code in _MY_CONNECT or "connection failed" in low or "could not connect" in low \
            or "unable to open database file" in low:
        return _first_line_text(message)
    return None


def _schema_problem(code: int | None, sqlstate: str | None, message: str) -> str | None:
    message = _tail(message)
    if code == _MY_NO_TABLE or sqlstate == "42P01" or message.startswith("no such table"):
        name = _quoted(message) or "?"
        return f"table {name.split('.')[-1]!r} does not exist " \
               "(run Rails' delayed_job migration, or `dj-consumer schema --create`)"
    if code == _MY_NO_COLUMN or sqlstate == "42703" or message.startswith("no such column") \
            or "has no column named" in message:
        name = _quoted(message) or message.rsplit(" ", 1)[-1]
        return f"column {name.split('.')[-1]!r} does not exist: the table is not a delayed_jobs " \
               "table, or its migration is incomplete"
    if code == _MY_TOO_LONG or sqlstate == "22001":
        column = _quoted(message)
        return f"a value is too long for {'column ' + repr(column) if column else 'its column'}" \
               f": {_first_line_text(message)}"
    return None


def _mysql_code(orig: BaseException) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _where(url: URL | None) -> str:
    return "" if url is None else f" at {url.render_as_string(hide_password=True)}"


def _host(url: URL | None) -> str:
    if url is None or url.host is None:
        return "the server"
    return f"{url.host}:{url.port}" if url.port else url.host


def _quoted(message: str) -> str | None:
    match = re.search(r"""['"]([^'"]+)['"]""", message) or re.search(r"no such \w+: (\S+)", message)
    return match.group(1) if match else None


def _tail(message: str) -> str:
    """The driver's words without PyMySQL's (code, '…') wrapping or libpq's preamble."""
    match = re.match(r"""\(\d+, ["'](.*)["']\)$""", message)
    text = match.group(1) if match else message
    return text.split("FATAL:", 1)[-1].strip()


def _first_line(orig: BaseException) -> str:
    return _first_line_text(str(orig))


def _first_line_text(message: str) -> str:
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return _tail(lines[0].strip()) if lines else "unknown error"


# MySQL error codes worth retrying: lock wait timeout, deadlock, connection gone or refused,
# server shutting down, connection killed.
_MYSQL_TRANSIENT = {1205, 1213, 2003, 2006, 2013, 2055, 1053, 1927, 4031, 1040}
# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available, shutdown, and
# the whole 08 class (connection exceptions).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}


# What drivers say when the server is (re)starting, gone, or busy, whatever the error class.
_TRANSIENT_WORDS = (
    "database is locked",
    "connection failed",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "the database system is shutting down",
    "the database system is starting up",
    "lost connection",
    "gone away",
)


# Refusals: the database answers, and says no, and will say it again (authentication,
# privileges, a missing database, table or column). MySQL error codes, PostgreSQL SQLSTATEs.
_MYSQL_REFUSALS = {1044, 1045, 1049, 1054, 1142, 1143, 1146, 1227, 1698, 1820, 1862}
_PG_REFUSALS = {"28000", "28P01", "3D000", "42501", "42P01", "42703"}
_REFUSAL_WORDS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
    "does not exist",
    "no such table",
    "no such column",
    "attempt to write a readonly database",
)


def is_refusal(exc: BaseException) -> bool:
    """The database refused us for good: retrying the same thing cannot help."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_REFUSALS
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _PG_REFUSALS
    message = str(orig).lower()
    return any(sign in message for sign in _REFUSAL_WORDS)


def is_transient(exc: BaseException) -> bool:
    """Errors that a retry of the whole unit of work can cure."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if is_refusal(exc):
        return False  # psycopg's OperationalError for a wrong password, say
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
        return True
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate in _PG_TRANSIENT or sqlstate.startswith("08")):
        return True
    if type(orig).__module__.startswith("psycopg") and type(orig).__name__ == "OperationalError":
        return True  # psycopg's OperationalError: the connection or the server, never the SQL
    message = str(orig).lower()
    return any(sign in message for sign in _TRANSIENT_WORDS)
