"""Worker lifecycle: races, slots, stop(), signals, exit_on_complete, and the CLI's config errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.store import Store
from tests.conftest import DB, ROOT, clean_env
from tests.integration.test_protocol import obj


def test_two_workers_racing_for_one_row_never_both_get_it(db: DB) -> None:
    """Many rounds of two stores reserving the same single ready row at the same instant."""
    stores = [
        Store(Config.from_mapping(db.config(worker_id=f"racer{i}")),
              name_filters=[("--- !!ruby/object:J%",)]) for i in range(2)
    ]
    for s in stores:
        s.check()
    try:
        for _ in range(15):
            job_id = db.insert(obj("J"))
            barrier = threading.Barrier(2)
            got: list[int] = []

            def race(store: Store, me: str, barrier: threading.Barrier = barrier,
                     got: list[int] = got) -> None:
                barrier.wait()
                row = store.reserve(me, SystemClock().now(), lambda r: True)
                if row is not None:
                    got.append(row.id)

            threads = [threading.Thread(target=race, args=(s, f"racer{i}")) for i, s in enumerate(stores)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert got == [job_id]
            assert db.row(job_id).locked_by in ("racer0", "racer1")
            with db.engine.begin() as conn:
                conn.execute(db.t.delete())
    finally:
        for s in stores:
            s.close()


def drain(db: DB, total: int, configs: list[dict[str, object]]) -> Counter[int]:
    """`total` jobs drained by one worker per config, each in its own thread: how often each ran."""
    reg = Registry()
    ran: list[int] = []
    lock = threading.Lock()

    def record(j: Job) -> None:
        with lock:
            ran.append(j.payload["n"])

    reg.run("J")(record)
    db.insert_many([obj("J", n=i) for i in range(total)])
    workers = [make_worker(db.config(exit_on_complete=True, **cfg), reg) for cfg in configs]
    threads = [threading.Thread(target=w.start) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return Counter(ran)


def test_four_workers_drain_each_job_exactly_once(db: DB) -> None:
    counts = drain(db, 120, [{"worker_id": f"w{i}", "read_ahead": 3} for i in range(4)])
    assert sorted(counts) == list(range(120))
    assert max(counts.values()) == 1
    assert db.count() == 0


def test_concurrency_slots_have_their_own_locked_by(db: DB) -> None:
    reg = Registry()
    seen: set[str] = set()
    gate = threading.Barrier(3, timeout=20)

    def meet(j: Job) -> None:
        seen.add(j.locked_by or "")
        if j.payload["n"] < 3:
            gate.wait()  # three jobs in flight at once, one per slot

    reg.run("J")(meet)
    for i in range(6):
        db.insert(obj("J", n=i))
    w = make_worker(db.config(concurrency=3, exit_on_complete=True), reg)
    w.start()
    assert db.count() == 0
    prefixes = {name.split(" ")[0] for name in seen}
    assert prefixes == {"pytest:0", "pytest:1", "pytest:2"}
    assert set(w.names) == seen


def test_stop_finishes_the_job_in_hand_and_releases_locks(db: DB) -> None:
    reg = Registry()
    started = threading.Event()

    def long(j: Job) -> None:
        started.set()
        time.sleep(0.5)

    reg.run("J")(long)
    first = db.insert(obj("J"))
    w = make_worker(db.config(), reg)
    # A lock this worker name still holds (e.g. from before a restart) is released on exit.
    leftover = db.insert(obj("Other"), locked_by=w.names[0], locked_at=SystemClock().now())
    thread = threading.Thread(target=w.start)
    thread.start()
    assert started.wait(10)
    w.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert db.row(first) is None  # finished, not abandoned
    row = db.row(leftover)
    assert (row.locked_by, row.locked_at) == (None, None)


def test_exit_on_complete_returns_when_nothing_is_ready(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    db.insert(obj("J"))
    future = db.insert(obj("J"), run_at=SystemClock().now().replace(year=2099))
    started = time.monotonic()
    make_worker(db.config(exit_on_complete=True, sleep_delay=30), reg).start()
    assert time.monotonic() - started < 10
    assert [r.id for r in db.rows()] == [future]


def test_sleep_delay_polls_again(sqlite_db: DB) -> None:
    reg = Registry()
    done = threading.Event()
    reg.run("J")(lambda j: done.set())
    w = make_worker(sqlite_db.config(sleep_delay=0.1), reg)
    thread = threading.Thread(target=w.start)
    thread.start()
    time.sleep(0.3)
    sqlite_db.insert(obj("J"))  # arrives while the worker sleeps
    assert done.wait(10)
    w.stop()
    thread.join(10)


def _cli(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dj_consumer.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(**(env or {})), cwd=kw.get("cwd", ROOT),  # type: ignore[arg-type]
    )


def test_sigterm_finishes_the_job_releases_locks_and_exits_0(db: DB, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    (tmp_path / "slowjobs.py").write_text(textwrap.dedent(f"""
        import time
        from dj_consumer import job

        @job.run("SlowJob")
        def slow(j):
            open({str(marker)!r}, "w").close()
            time.sleep(1.5)
            open({str(marker)!r} + ".done", "w").close()
    """))
    job_id = db.insert(obj("SlowJob"))
    proc = _cli("work", "--database-url", db.url, "--table-name", db.table,
                "--import", str(tmp_path / "slowjobs.py"), "--sleep-delay", "0.1",
                "--log-format", "json")
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (tmp_path / "started.done").exists()
    assert db.row(job_id) is None
    assert '"event": "worker.stopping"' in err and '"signal": "SIGTERM"' in err
    assert '"event": "worker.stopped"' in err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "cannot reach the database"),
        (["--database-url", "notaurl"], "is not a database URL"),
        (["--database-url", "sqlite:///{tmp}/x.db"], "table 'delayed_jobs' does not exist"),
        (["--database-url", "sqlite:///{tmp}/cols.db"], "has no column 'locked_by'"),
        (["--database-url", "sqlite:///{tmp}/x.db", "--concurrency", "zero"], "invalid int value"),
        (["--database-url", "sqlite:///{tmp}/x.db", "--import", "no_such_module_xyz"], "--import no_such_module_xyz"),
    ],
)
def test_config_mistakes_print_one_line_and_exit_nonzero(tmp_path: Path, args: list[str], expect: str) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/cols.db")
    with engine.begin() as conn:
        # Every Rails column but locked_by.
        conn.execute(sa.text(
            "create table delayed_jobs (id integer primary key, priority int, attempts int, "
            "handler text, last_error text, run_at datetime, locked_at datetime, "
            "failed_at datetime, queue varchar(255), created_at datetime, updated_at datetime)"
        ))
    engine.dispose()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = _cli("work", "--import", "sample_jobs", *args)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert expect in err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    # ours is one line; argparse's own errors come after its usage summary
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    assert expect in lines[-1]


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({"DJ_CONCURENCY": "2"}, None),  # an unknown variable is reported (test_cli_config), not fatal
        ({"DJ_CONCURRENCY": "two"}, "DJ_CONCURRENCY must be int, got 'two'"),
        ({"DJ_MAX_RUN_TIME": "-1"}, "max_run_time must be > 0"),
    ],
)
def test_env_mistakes(tmp_path: Path, env: dict[str, str], expect: str | None) -> None:
    db_path = tmp_path / "x.db"
    engine = sa.create_engine(f"sqlite:///{db_path}")
    from dj_consumer import schema
    schema.create(engine)
    engine.dispose()
    proc = _cli("work", "--import", "sample_jobs", "--exit-on-complete",
                env={"DJ_DATABASE_URL": f"sqlite:///{db_path}", **env})
    _out, err = proc.communicate(timeout=60)
    if expect is None:
        assert proc.returncode == 0, err
    else:
        assert proc.returncode == 2
        assert err.strip().splitlines() == [f"dj-consumer: error: {expect}"] or expect in err


def test_unknown_config_key_via_make_worker(sqlite_db: DB) -> None:
    from dj_consumer.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'queue' \\(did you mean 'queues'\\?\\)"):
        make_worker({**sqlite_db.config(), "queue": "mail"}, Registry())


def test_no_handlers_is_a_clear_error(sqlite_db: DB) -> None:
    from dj_consumer.errors import ConfigError

    with pytest.raises(ConfigError, match="no job handlers are registered"):
        make_worker(sqlite_db.config(), Registry()).work_off()
