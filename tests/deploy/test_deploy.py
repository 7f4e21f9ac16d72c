"""Issue 19: deploy/ works on the first try, proved without a container engine.

- the Dockerfile's install step (the same command) builds a plain venv, as a non-root user,
  needing no compiler, and its CMD starts a worker that answers its probes and stops on
  its STOPSIGNAL;
- the systemd unit's ExecStart (paths swapped for that venv) starts as the unit's kind of
  user and stops on KillSignal well within TimeoutStopSec, exit 0 (no Restart=on-failure);
- the Kubernetes Deployment's probes (paths, named port) answer 200 from a worker started
  with the container's args and env, and its grace period outlasts shutdown_timeout.

The non-root user is `nobody` when the tests run as root (useradd is not needed for that);
as any other user, that user itself, which is non-root already.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ruamel.yaml import YAML

from dj_consumer import schema
from dj_consumer.clock import SystemClock
from tests.conftest import ROOT
from tests.integration.procs import Proc, get
from tests.integration.test_protocol import obj

DEPLOY = ROOT / "deploy"
NOBODY = 65534
#: The Debian interpreter (any user may run it) stands for the image's `python`.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"
JOBS = '''
from dj_consumer import job

@job.run("DeployJob")
def run(j):
    with open(__file__ + ".ran", "a") as f:
        f.write(f"{j.id}\\n")
'''

pytestmark = pytest.mark.slow


def dockerfile() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def docker_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for part in shlex.split(rest):
                key, _, value = part.partition("=")
                env[key] = value
    return env


@dataclass
class Built:
    root: Path  # every path of the test, owned by the user
    venv: Path
    app: Path  # WORKDIR: the handlers (app/jobs.py) and the SQLite database
    user: int | None  # run as this uid (None: the current, non-root user)
    build_log: str

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        base = {"HOME": str(self.root), "LANG": "C.UTF-8",
                "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"}
        return {**base, **extra}


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """The Dockerfile's build stage, run as its commands say, in a temporary root."""
    user = NOBODY if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="dj-deploy-"))
    src, app = root / "src", root / "app"
    build = dockerfile()[0]
    # COPY lines of the build stage: the same files from this checkout.
    for word, rest in build:
        if word != "COPY":
            continue
        *sources, dest = shlex.split(rest)
        target = (src / dest).resolve()
        for name in sources:
            path = ROOT / name
            into = target / path.name if len(sources) > 1 or dest.endswith("/") else target
            if path.is_dir():
                shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, into)
    (app / "app").mkdir(parents=True)
    (app / "app" / "__init__.py").write_text("")
    (app / "app" / "jobs.py").write_text(JOBS)
    if user is not None:
        for path in [root, *root.rglob("*")]:
            os.chown(path, user, user)
    runs = [rest for word, rest in build if word == "RUN"]
    assert len(runs) == 1, runs
    venv = root / "venv"
    command = runs[0].replace("/opt/venv", str(venv))
    command = re.sub(r"^python ", f"{SYSTEM_PYTHON} ", command)
    extra: dict[str, Any] = {} if user is None else {"user": user, "group": user,
                                                      "extra_groups": []}
    out = subprocess.run(["/bin/sh", "-c", command], cwd=src, capture_output=True, text=True,
                         env={**{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
                              "HOME": str(root), "PATH": "/usr/bin:/bin"},
                         timeout=600, **extra)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    try:
        yield Built(root, venv, app, user, out.stdout + out.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sqlite_jobs(built: Built, count: int) -> str:
    (built.app / "app" / "jobs.py.ran").unlink(missing_ok=True)
    path = built.app / f"jobs-{time.monotonic_ns()}.db"
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    schema.create(engine, "delayed_jobs")
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.delayed_jobs_table("delayed_jobs")),
                     [{"handler": obj("DeployJob"), "priority": 0, "attempts": 0,
                       "run_at": SystemClock().now() - timedelta(minutes=1)}
                      for _ in range(count)])
    engine.dispose()
    if built.user is not None:
        os.chown(path, built.user, built.user)
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: Proc, port: int) -> None:
    def ready() -> bool:
        try:
            return get(port, "/readyz")[0] == 200
        except OSError:
            return False

    proc.wait_for(ready, timeout=60, why=f"/readyz on port {port}")


def ran(built: Built) -> int:
    marker = built.app / "app" / "jobs.py.ran"
    return len(marker.read_text().split()) if marker.exists() else 0


# -- Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_is_slim_non_root_and_stops_on_sigterm() -> None:
    stages = dockerfile()
    assert len(stages) == 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+-slim( AS \w+)?", stage[0][1]), stage[0]
    final = stages[-1]
    words = dict(final)
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert words["USER"] not in ("root", "0")
    assert any(w == "RUN" and "useradd" in r and words["USER"] in r for w, r in final)
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"\b(gcc|build-essential|g\+\+|clang|apt-get install)\b", text)
    assert json.loads(words["CMD"])[:2] == ["dj-consumer", "work"]
    assert docker_env(final)["DJ_METRICS_HOST"] == "0.0.0.0"


def test_the_dockerfile_install_builds_no_wheel_but_ours(built: Built) -> None:
    """Every dependency came as a wheel: the final image needs no compiler."""
    built_wheels = re.findall(r"Building wheel for (\S+)", built.build_log)
    assert {w.replace("-", "_") for w in built_wheels} <= {"dj_consumer"}, built_wheels
    assert (built.venv / "bin" / "dj-consumer").exists()
    python = built.venv / "bin" / "python"
    probe = "import prometheus_client, psycopg, sqlalchemy; print('ok')"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "ok"


def test_the_dockerfile_cmd_starts_answers_probes_and_stops_on_its_stopsignal(
        built: Built) -> None:
    final = dockerfile()[-1]
    words = dict(final)
    url = sqlite_jobs(built, 20)
    port = free_port()  # `docker run -e DJ_METRICS_PORT=…`: the image's ENV, one override
    env = built.env({**docker_env(final), "DJ_DATABASE_URL": url,
                     "DJ_METRICS_PORT": str(port), "DJ_SLEEP_DELAY": "0.2"})
    env["PATH"] = f"{built.venv / 'bin'}:{env['PATH'].split(':', 1)[1]}"
    proc = Proc([], cwd=built.app, env=env, command=json.loads(words["CMD"]), user=built.user)
    try:
        wait_ready(proc, port)
        assert get(port, "/healthz")[0] == 200
        proc.wait_for(lambda: ran(built) == 20, why="the jobs")
        assert "dj_consumer_job_succeeded_total" in get(port, "/metrics")[1]
        proc.proc.send_signal(getattr(signal, words["STOPSIGNAL"]))
        assert proc.proc.wait(30) == 0, proc.lines[-20:]
    finally:
        proc.close()


# -- systemd ---------------------------------------------------------------------------------


def unit() -> dict[str, list[str]]:
    """The unit's [Service] keys, each with every value it is given (Environment= repeats)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "dj-consumer.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_the_systemd_unit_starts_and_stops_on_sigterm_within_timeoutstopsec(
        built: Built) -> None:
    service = unit()
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]
    timeout = float(service["TimeoutStopSec"][0])
    env = dict(v.split("=", 1) for v in service["Environment"])
    assert timeout >= float(env["DJ_SHUTDOWN_TIMEOUT"]) + 10
    assert service["User"][0] != "root"
    command = shlex.split(service["ExecStart"][0])
    assert command[0] == "/opt/dj_consumer/venv/bin/dj-consumer"
    command[0] = str(built.venv / "bin" / "dj-consumer")
    port = int(command[command.index("--metrics-port") + 1])
    url = sqlite_jobs(built, 10)
    # EnvironmentFile: the operator's DJ_DATABASE_URL (and a quicker poll for the test).
    proc = Proc([], cwd=built.app, user=built.user, command=command,
                env=built.env({**env, "DJ_DATABASE_URL": url, "DJ_SLEEP_DELAY": "0.2"}))
    try:
        wait_ready(proc, port)
        proc.wait_for(lambda: ran(built) >= 10, why="the jobs")
        started = time.monotonic()
        proc.proc.send_signal(getattr(signal, service["KillSignal"][0]))  # KillMode=mixed
        code = proc.proc.wait(timeout)
        took = time.monotonic() - started
    finally:
        proc.close()
    assert code == 0, proc.lines[-20:]  # Restart=on-failure does not restart it
    assert took < timeout
    children = [e["pid"] for e in proc.events("supervisor.child_started")]
    assert children
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- Kubernetes ------------------------------------------------------------------------------


def deployment() -> Any:
    return YAML(typ="safe").load((DEPLOY / "kubernetes.yaml").read_text())


def test_the_kubernetes_probes_answer_from_a_worker_started_as_the_container_is(
        built: Built) -> None:
    spec = deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["DJ_METRICS_PORT"]) == ports["metrics"]
    assert env["DJ_METRICS_HOST"] == "0.0.0.0"
    assert spec["terminationGracePeriodSeconds"] >= float(env["DJ_SHUTDOWN_TIMEOUT"]) + 10
    # The image's user (Dockerfile: useradd --uid 10001) is the pod's runAsUser.
    uid = re.search(r"--uid (\d+)", (DEPLOY / "Dockerfile").read_text())
    assert uid and spec["securityContext"]["runAsUser"] == int(uid.group(1))
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert {p["path"] for p in probes.values()} == {"/healthz", "/readyz"}
    url = sqlite_jobs(built, 5)
    env = {k: v for k, v in env.items() if v is not None}
    proc = Proc([], cwd=built.app, user=built.user, command=container["args"],
                env=built.env({**env, "DJ_DATABASE_URL": url, "DJ_SLEEP_DELAY": "0.2"}))
    try:
        for probe in probes.values():
            port = probe["port"]
            port = ports[port] if isinstance(port, str) else port
            proc.wait_for(lambda p=probe, n=port: _answers(n, p["path"]), timeout=60,
                          why=f"{probe['path']} on {port}")
        proc.wait_for(lambda: ran(built) >= 5, why="the jobs")
        proc.proc.send_signal(signal.SIGTERM)  # what the kubelet sends first
        assert proc.proc.wait(spec["terminationGracePeriodSeconds"]) == 0
    finally:
        proc.close()


def _answers(port: int, path: str) -> bool:
    try:
        return get(port, path)[0] == 200
    except OSError:
        return False
