"""The ready clause: the one part of the row protocol's SQL that is built, from the worker's
config (queues, priorities, leases) and the names it runs. Every statement that selects or
claims a ready row (sql.py) has it as `{ready}`; diagnose.why states the same rule in words
(tests/integration/test_ready_rule.py holds the two together)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dj_consumer.config import MAX_PROCESSES, Config
from dj_consumer.ruby_yaml import like_literal, sure_prefixes, sure_regex


@dataclass(frozen=True)
class Ready:
    """The ready clause, the `sure` test (may a row be claimed before it is parsed?), and
    the binds both take that never change for this worker (built once, not per reserve)."""

    where: str
    filters: str  # the part of `where` that says which rows this worker serves at all
    sure: str
    constants: dict[str, Any] = field(default_factory=dict)


def ready_clause(config: Config, dialect: str, *, name_filters: Sequence[Sequence[str]] = (),
                 names: Sequence[str] = (), mariadb: bool = False) -> Ready:
    """Rails' ready test (ready_to_run), our queue and priority filters, and the name
    prefilters; with the sure test of `names` and every constant bind."""
    binds: dict[str, Any] = {}
    lt = "<=" if dialect == "sqlite" else "<"  # see Statements.earlier
    # A lock older than max_run_time is abandoned for everyone (Ruby's horizon). A lock held
    # by a lease-renewing worker (ours: it refreshes locked_at every heartbeat) is abandoned
    # sooner, after lock_timeout by the database's clock; Ruby's locks never renew, so they
    # keep the full horizon and no live Ruby job is ever taken early.
    stale = f"locked_at {lt} :stale"
    if config.uses_leases:
        tests = lease_tests(config, dialect)
        binds.update({f"lease_{i}": pattern for i, (_, pattern) in enumerate(tests)})
        binds.update(lease_s=config.lock_timeout, lease_us=round(config.lock_timeout * 1_000_000))
        owners = " OR ".join(test.format(f":lease_{i}") for i, (test, _) in enumerate(tests))
        since = LEASE_STALE.get(dialect, f"{lt} :lease_stale")
        stale += f" OR (locked_at {since} AND ({owners}))"
    served = _filters(config, name_filters, binds, dialect)
    where = (f"((run_at <= :now AND (locked_at IS NULL OR {stale})) OR {owned(dialect)}) "
             f"AND failed_at IS NULL AND {served}")
    return Ready(where, served, _sure(dialect, names, mariadb, binds), binds)


def _filters(config: Config, name_filters: Sequence[Sequence[str]], binds: dict[str, Any],
             dialect: str) -> str:
    """Which rows this worker serves at all: queues, priorities, name prefilters."""
    ready = []
    if config.queues:
        named = [q for q in config.queues if q is not None]
        # One bind per queue (the list is fixed per worker), so the statement needs no
        # per-call rendering and can run on the driver's cursor directly.
        binds.update({f"queue_{i}": q for i, q in enumerate(named)})
        parts = ["queue IN (" + ", ".join(f":queue_{i}" for i in range(len(named))) + ")"] if named else []
        if None in config.queues:
            parts.append("queue IS NULL")
        ready.append("(" + " OR ".join(parts) + ")")
    if config.min_priority is not None:
        binds["min_priority"] = config.min_priority
        ready.append("priority >= :min_priority")
    if config.max_priority is not None:
        binds["max_priority"] = config.max_priority
        ready.append("priority <= :max_priority")
    alternatives = []
    for i, patterns in enumerate(name_filters):
        binds.update({f"n{i}_{j}": p for j, p in enumerate(patterns)})
        likes = " AND ".join(f"handler LIKE :n{i}_{j} ESCAPE '!'" for j in range(len(patterns)))
        # No prefilter is possible for some names (Hash, String…): the parse decides.
        alternatives.append(f"({likes or '1 = 1'})")
    names = "(" + (" OR ".join(alternatives) or "1 = 0") + ")"
    if dialect == "postgresql" and alternatives:
        # PostgreSQL estimates that almost no row passes these unanchored LIKEs, so it reads
        # every ready row (bitmap scan), then sorts them, instead of walking the (priority,
        # run_at) index and stopping at the first match: 9 ms per reserve at 3,000 ready
        # `.delay` rows, linear in the backlog. Behind a CASE it assumes half the rows pass
        # and walks the index (0.15 ms). Same rows: handler is NOT NULL, so no NULL to hide.
        names = f"(CASE WHEN {names} THEN true ELSE false END)"
    ready.append(names)
    return " AND ".join(ready)


def _sure(dialect: str, names: Sequence[str], mariadb: bool, binds: dict[str, Any]) -> str:
    """Whether a row's handler starts the way Psych writes one of our names
    (ruby_yaml.sure_prefixes): such a row may be claimed before the client parses it; any
    other row is parsed first, so rows we cannot run are never locked. Exact bytes: MySQL's
    text comparison ignores case, PostgreSQL's LIKE does not. On MariaDB one regex (shorter
    SQL to parse on every reserve), elsewhere one LIKE per beginning."""
    if mariadb:
        regex = sure_regex(names)
        if regex:
            binds["sure_regex"] = regex
            return "handler REGEXP BINARY :sure_regex"
        return "1 = 0"
    prefixes = [p for n in names for p in sure_prefixes(n)]
    binds.update({f"sure_{i}": like_literal(p) + "%" for i, p in enumerate(prefixes)})
    handler = "CAST(handler AS BINARY)" if dialect == "mysql" else "handler"
    return " OR ".join(f"{handler} LIKE :sure_{i} ESCAPE '!'" for i in range(len(prefixes))) or "1 = 0"


def owned(dialect: str) -> str:
    """Owner tests are byte-exact: MySQL's text comparison follows the column's collation
    (case, accents, trailing spaces ignored), so `PY host:…` would pass for `py`."""
    return "CAST(locked_by AS BINARY) = :me" if dialect == "mysql" else "locked_by = :me"


#: The database's own clock (naive UTC, as Rails writes times), where it has one; SQLite's
#: writers all share the one host's clock.
DB_NOW = {"mysql": "UTC_TIMESTAMP()", "postgresql": "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"}
#: `locked_at` is older than lock_timeout by that clock.
LEASE_STALE = {"mysql": "< UTC_TIMESTAMP() - INTERVAL :lease_us MICROSECOND",
               "postgresql": f"< {DB_NOW['postgresql']} - :lease_s * INTERVAL '1 second'"}



def lease_tests(cfg: Config, dialect: str) -> list[tuple[str, str]]:
    """(test with {} for the bind, pattern) per lease locked_by form, matched exactly (bytes,
    case): "{id} host:… pid:…", "{id}:{slot} host:…", and a supervisor's children
    "{id}.{k}[:{slot}] host:…" with k digits only, so no other worker_id passes for one."""
    tests: list[tuple[str, str]] = []
    if dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not (and has [0-9])
        for wid in cfg.lease_ids:
            base = _glob_literal(wid)
            kids = [base + "." + "[0-9]" * n for n in range(1, len(str(MAX_PROCESSES)) + 1)]
            for ident in (base, *kids):
                tests += [("locked_by GLOB {}", f"{ident} host:* pid:*"),
                          ("locked_by GLOB {}", f"{ident}:* host:* pid:*")]
        return tests
    like = "CAST(locked_by AS BINARY) LIKE {} ESCAPE '!'" if dialect == "mysql" \
        else "locked_by LIKE {} ESCAPE '!'"
    regex = "CAST(locked_by AS BINARY) REGEXP {}" if dialect == "mysql" else "locked_by ~ {}"
    for wid in cfg.lease_ids:
        tests += [(like, f"{like_literal(wid)} host:% pid:%"),
                  (like, f"{like_literal(wid)}:% host:% pid:%"),
                  (regex, f"^{_regex_literal(wid)}[.][0-9]+(:.*)? host:.* pid:.*$")]
    return tests


def _regex_literal(text: str) -> str:
    """``text`` matched literally by MySQL's and PostgreSQL's regular expressions."""
    return "".join(f"[{c}]" if not c.isalnum() and c not in "\\^" else
                   ("\\" + c if c in "\\^" else c) for c in text)


def _glob_literal(text: str) -> str:
    """``text`` matched literally by SQLite's GLOB (case-sensitive, unlike its LIKE)."""
    return re.sub(r"([*?\[])", r"[\1]", text)

