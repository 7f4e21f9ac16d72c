from __future__ import annotations

import pytest

import dj_consumer
from dj_consumer import Registry
from dj_consumer.errors import RegistryError


def test_module_level_job_is_a_registry() -> None:
    assert isinstance(dj_consumer.job, Registry)
    for name in ("run", "before", "after", "success", "error", "failure"):
        assert callable(getattr(dj_consumer.job, name))


def test_run_and_hooks_register_by_name() -> None:
    reg = Registry()

    @reg.run("User#send_welcome", max_attempts=3, max_run_time=10, queue="mail")
    def work(j: object) -> None: ...

    @reg.failure("User#send_welcome")
    def failed(j: object, e: BaseException) -> None: ...

    spec = reg.spec("User#send_welcome")
    assert spec is not None and spec.run is work and spec.hook("failure") is failed
    assert (spec.max_attempts, spec.max_run_time, spec.queue) == (3, 10, "mail")
    assert reg.names() == ["User#send_welcome"]
    assert "User#send_welcome" in reg and "Other" not in reg


def test_duplicates_fail_loudly() -> None:
    reg = Registry()
    reg.run("A")(lambda j: None)
    with pytest.raises(RegistryError, match="A already has a run handler"):
        reg.run("A")(lambda j: None)
    reg.before("A")(lambda j: None)
    with pytest.raises(RegistryError, match="A already has a before hook"):
        reg.before("A")(lambda j: None)


def test_hooks_alone_do_not_make_a_job_runnable() -> None:
    reg = Registry()
    reg.after("Typo")(lambda j: None)
    assert reg.spec("Typo") is None
    assert reg.names() == []
    assert reg.orphan_hooks() == ["Typo"]


@pytest.mark.parametrize("bad", ["", " A", None, 3])
def test_bad_names(bad: object) -> None:
    with pytest.raises(RegistryError):
        Registry().run(bad)  # type: ignore[arg-type]


def test_bad_options() -> None:
    with pytest.raises(RegistryError, match="max_attempts"):
        Registry().run("A", max_attempts=0)
    with pytest.raises(RegistryError, match="timeout must be one of"):
        Registry().run("A", timeout="hard")
