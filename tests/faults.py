"""Faults injected at the driver connection of a real database (never a mock of it).

`Faults(engine)` wraps every DBAPI connection the engine opens from then on: its cursors and
its commit() consult the rules added with `after` / `before`, matched against the SQL text.

- `lose_reply`: the statement (or the COMMIT of a transaction that ran it) really happens,
  then the connection is closed and the driver's own "connection lost" error is raised, as
  if the server's reply never arrived.
- any exception instance: raised before the statement is sent (nothing happens).
- any other callable: called before the statement is sent (say, another client's write),
  then the statement goes on.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

LOSE_REPLY = "lose_reply"


@dataclass
class Rule:
    pattern: re.Pattern[str]
    action: Any  # LOSE_REPLY or an exception to raise before sending
    times: int
    when: Callable[[], bool] | None = None  # only while this holds (e.g. in a given thread)
    fired: int = 0


class Faults:
    def __init__(self, *engines: sa.Engine) -> None:
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        for engine in engines:
            if engine.dialect.name == "sqlite":  # sqlite3's connection takes no attributes
                sa.event.listen(engine, "before_cursor_execute", self._sqlite_before)
                sa.event.listen(engine, "after_cursor_execute", self._sqlite_after)
            else:
                sa.event.listen(engine, "connect", self._wrap)

    def add(self, sql: str, action: Any, *, times: int = 1,
            when: Callable[[], bool] | None = None) -> Rule:
        rule = Rule(re.compile(sql, re.IGNORECASE | re.DOTALL), action, times, when)
        with self.lock:
            self.rules.append(rule)
        return rule

    def _take(self, sql: str, kind: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if (rule.fired < rule.times and (rule.action == LOSE_REPLY) == (kind == "after")
                        and rule.pattern.search(sql) and (rule.when is None or rule.when())):
                    rule.fired += 1
                    return rule
        return None

    def _sqlite_before(self, _conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        self._before(sql)

    def _sqlite_after(self, _conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        """SQLite has no reply to lose: the statement ran, then the caller sees an error."""
        if self._take(sql, "after") is not None:
            import sqlite3

            raise sqlite3.OperationalError("database is locked (injected after the statement ran)")

    def _before(self, sql: str) -> None:
        rule = self._take(sql, "before")
        if rule is not None and isinstance(rule.action, BaseException):
            raise rule.action
        if rule is not None:
            rule.action()

    def _wrap(self, dbapi_conn: Any, _record: Any) -> None:
        faults = self
        real_cursor, real_commit = dbapi_conn.cursor, dbapi_conn.commit
        sent: list[str] = []  # statements of the open transaction

        def cursor(*args: Any, **kw: Any) -> Any:
            return _Cursor(real_cursor(*args, **kw), faults, dbapi_conn, sent)

        def commit() -> None:
            statements = " ; ".join(sent)
            sent.clear()
            real_commit()
            if statements and faults._take(statements, "after"):
                lose_connection(dbapi_conn)

        dbapi_conn.cursor = cursor
        dbapi_conn.commit = commit


class _Cursor:
    def __init__(self, cursor: Any, faults: Faults, conn: Any, sent: list[str]) -> None:
        self._cursor, self._faults, self._conn, self._sent = cursor, faults, conn, sent

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        text = str(sql)
        self._faults._before(text)
        result = self._cursor.execute(sql, *args, **kw)
        if _autocommit(self._conn):
            if self._faults._take(text, "after"):
                lose_connection(self._conn)
        else:
            self._sent.append(text)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self._cursor)


def _autocommit(conn: Any) -> bool:
    flag = getattr(conn, "autocommit", None)
    if callable(flag):  # PyMySQL: autocommit(value) sets; get_autocommit() reads
        return bool(conn.get_autocommit())
    return bool(flag)


def lose_connection(conn: Any) -> None:
    """Close the connection and raise what its driver raises when the reply never came."""
    module = type(conn).__module__
    with contextlib.suppress(Exception):
        conn.close()
    if module.startswith("pymysql"):
        import pymysql

        raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
    if module.startswith("psycopg"):
        import psycopg

        raise psycopg.OperationalError("consuming input failed: server closed the connection "
                                       "unexpectedly (injected)")
    raise RuntimeError(f"no lost-reply fault for {module}")


class Proxy:
    """A TCP proxy in front of a database server. `freeze()` makes every connection open now
    half-open: bytes are no longer passed on either way, and nothing tells either end (as when
    a host or a NAT entry dies). Connections made later pass as usual."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frozen: set[int] = set()
        self.pairs: list[tuple[Any, Any]] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen.update(id(pair) for pair in self.pairs)

    def close(self) -> None:
        self.closed = True
        self.server.close()
        for a, b in self.pairs:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            pair = (client, upstream)
            self.pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: tuple[Any, Any], src: Any, dst: Any) -> None:
        import select
        import time

        while not self.closed:
            if id(pair) in self.frozen:
                time.sleep(0.05)  # hold the bytes: the other end waits for ever
                continue
            try:
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket_shut_wr())
                    return
                dst.sendall(data)
            except OSError:
                return


def socket_shut_wr() -> int:
    import socket

    return socket.SHUT_WR
