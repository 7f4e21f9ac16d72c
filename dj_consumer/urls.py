"""database_url as Rails writes it → the SQLAlchemy URL we connect with.

A Rails app's DATABASE_URL (`mysql2://…?pool=5&encoding=utf8mb4&reconnect=true`) is the URL a
user has at hand. Its ActiveRecord-only parameters (the pool, reconnects, prepared statements)
mean nothing to a worker and are dropped; those that mean something to the database are
renamed for our drivers (encoding → charset, socket → unix_socket, sslca → ssl_ca, and on
PostgreSQL encoding → client_encoding, schema_search_path → options=-c search_path=…). Rails'
adapter names (`mysql2://`, `trilogy://`, `postgres://`, a driverless `mysql://`) are refused
with the URL we would use instead, since guessing a driver silently hides a misconfiguration.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dj_consumer.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: Rails adapter (or driverless SQLAlchemy) schemes → the scheme dj_consumer connects with.
SCHEMES = {
    "mysql2": "mysql+pymysql", "trilogy": "mysql+pymysql", "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql", "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg", "postgis": "postgresql+psycopg", "sqlite3": "sqlite",
}
#: ActiveRecord connection-pool and adapter settings: nothing to do with the connection itself.
RAILS_ONLY = frozenset({
    "pool", "reconnect", "timeout", "checkout_timeout", "idle_timeout", "reaping_frequency",
    "prepared_statements", "statement_limit", "advisory_locks", "strict", "min_messages",
    "dead_connection_timeout", "adapter", "replica", "migrations_paths", "schema_cache_path",
    "database_tasks", "insert_returning", "use_metadata_table", "schema_dump", "flags",
})
_RENAMES = {
    "mysql": {"encoding": "charset", "socket": "unix_socket", "sslca": "ssl_ca",
              "sslcert": "ssl_cert", "sslkey": "ssl_key", "sslcapath": "ssl_capath",
              "sslcipher": "ssl_cipher"},
    "postgresql": {"encoding": "client_encoding"},
    "sqlite": {},
}
#: What the drivers take as URL parameters (PyMySQL's connect() as SQLAlchemy passes it;
#: libpq's connection keywords). Anything else is a mistake worth one line at start.
_KNOWN = {
    "mysql": frozenset({
        "charset", "collation", "unix_socket", "sql_mode", "init_command", "connect_timeout",
        "read_timeout", "write_timeout", "local_infile", "max_allowed_packet", "bind_address",
        "binary_prefix", "program_name", "compress", "use_unicode", "autocommit",
        "read_default_file", "read_default_group", "server_public_key", "ssl_ca", "ssl_key",
        "ssl_cert", "ssl_capath", "ssl_cipher", "ssl_check_hostname", "ssl_disabled",
        "ssl_verify_cert", "ssl_verify_identity", "ssl_key_password",
    }),
    "postgresql": frozenset({
        "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding",
        "connect_timeout", "client_encoding", "options", "application_name",
        "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
        "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert",
        "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
        "ssl_max_protocol_version", "krbsrvname", "gsslib", "service", "target_session_attrs",
        "load_balance_hosts", "sslnegotiation", "sslcertmode", "require_auth",
    }),
}
_SCHEME = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*):(//)?")


def resolve(text: str) -> tuple[URL, list[str]]:
    """The URL to connect with, and a note for each Rails parameter dropped or renamed."""
    from sqlalchemy.engine import make_url

    _refuse_rails_scheme(text)
    try:
        url = make_url(text)
    except Exception as exc:
        raise ConfigError(
            f"database_url {text!r} is not a database URL ({exc}); "
            "expected e.g. mysql+pymysql://user:pass@host:3306/db"
        ) from None
    backend = url.get_backend_name()
    backend = "mysql" if backend == "mariadb" else backend
    if not url.query or backend not in _RENAMES:
        return url, []
    query: dict[str, str | tuple[str, ...]] = {}
    dropped: list[str] = []
    renamed: list[str] = []
    for key, value in url.query.items():
        target = _RENAMES[backend].get(key, key)
        if key in RAILS_ONLY or key.startswith("variables"):
            dropped.append(f"{key}={_text(value)}")
        elif backend == "postgresql" and key == "schema_search_path":
            query["options"] = f"-c search_path={_text(value)}"
            renamed.append(f"{key} → options=-c search_path=…")
        elif backend == "mysql" and key == "ssl_mode":
            _ssl_mode(value, dropped)
        else:
            _check_known(backend, target, key)
            if target != key:
                renamed.append(f"{key} → {target}")
            query[target] = value
    notes = []
    if dropped:
        notes.append(f"ignored Rails-only parameters {', '.join(dropped)}")
    if renamed:
        notes.append(f"renamed {', '.join(renamed)}")
    return url.set(query=query), notes


def _refuse_rails_scheme(text: str) -> None:
    match = _SCHEME.match(text)
    if match is None:
        return
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        return
    rest = text[match.end():]
    # Rails' sqlite3:db/x.sqlite3 and sqlite3:///abs/x are SQLAlchemy's sqlite:///… paths.
    suggestion = f"sqlite:///{rest}" if scheme == "sqlite3" else f"{SCHEMES[scheme]}://{rest}"
    raise ConfigError(
        f"database_url scheme {scheme}: is Rails' adapter name or names no driver; "
        f"did you mean {_hide_password(suggestion)} ?"
    )


def _ssl_mode(value: str | tuple[str, ...], dropped: list[str]) -> None:
    mode = _text(value)
    if mode.lower() == "disabled":
        dropped.append(f"ssl_mode={mode}")
        return
    # Never drop a TLS requirement: say how PyMySQL spells it.
    raise ConfigError(f"database_url ssl_mode={mode} is mysql2's; PyMySQL needs the CA instead: "
                      "?ssl_ca=/path/to/ca.pem (and ssl_verify_identity=true to check the host)")


def _check_known(backend: str, key: str, given: str) -> None:
    known = _KNOWN.get(backend)
    if known is None or key in known:
        return
    from dj_consumer.config import closest

    hint = closest(key, known)
    driver = "PyMySQL" if backend == "mysql" else "libpq"
    raise ConfigError(f"database_url parameter {given!r} is not understood by {driver}"
                      + (f" (did you mean {hint!r}?)" if hint else ""))


def _text(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else ",".join(value)


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)
