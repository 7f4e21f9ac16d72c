"""Prints what the model test ran (schedules, faults, violations) at the end of the session,
whatever -s / -q say."""

from __future__ import annotations

import pytest

from tests.model.tally import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in TALLY.lines():
        terminalreporter.write_line(line)
