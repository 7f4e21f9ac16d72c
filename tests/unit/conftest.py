"""The handler parser the ruby_yaml tests run on: libyaml ("fast", installed with dj_consumer
where a wheel exists) and ruamel's pure-Python parser ("pure", what runs everywhere else).
A module opts in with ``pytestmark = pytest.mark.usefixtures("yaml_parser")``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dj_consumer.ruby_yaml._build as build_module
from tests.conftest import unavailable


@pytest.fixture(params=["fast", "pure"])
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "fast" and not build_module.FAST_PARSER:
        unavailable("no libyaml binding (ruamel.yaml.clib) is installed: the fast parser is untested")
    if request.param == "pure":
        monkeypatch.setattr(build_module, "_CParser", None)
    yield request.param
