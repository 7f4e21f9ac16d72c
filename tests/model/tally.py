"""What the model test ran in this pytest session, for the terminal summary (conftest.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.model.driver import Played
from tests.model.model import Violation

STEPS = {"stop": "stops", "interrupt": "second SIGTERMs", "kill": "kill -9s"}


@dataclass
class Tally:
    schedules: Counter[str] = field(default_factory=Counter)  # per backend
    faults: Counter[str] = field(default_factory=Counter)     # injected, per kind
    steps: Counter[str] = field(default_factory=Counter)      # stops, kill -9s, enqueues …
    runs: int = 0
    seconds: float = 0.0
    # Schedules that broke an invariant, per known defect and invariant; and any other.
    known: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    replays: list[str] = field(default_factory=list)

    def add(self, played: Played, violations: list[Violation], known: set[str]) -> None:
        self.schedules[played.backend] += 1
        self.seconds += played.seconds
        for e in played.events:
            if e["ev"] == "fault":
                self.faults[e["fault"]] += 1
            elif e["ev"] in STEPS:
                self.steps[STEPS[e["ev"]]] += 1
            elif e["ev"] == "enqueued":
                self.steps["enqueues"] += 1
            elif e["ev"] == "run_start":
                self.runs += 1
        self.steps["shutdown_timeouts"] += sum(
            1 for w in played.schedule.workers if w.shutdown_timeout is not None)
        for v in {(v.invariant, v.defect): v for v in violations}.values():
            if v.defect in known:
                self.known[f"#{v.defect} {v.invariant}"] += 1
            else:
                self.unknown += 1

    def lines(self) -> list[str]:
        if not self.schedules:
            return []
        per = ", ".join(f"{b} {n}" for b, n in sorted(self.schedules.items()))
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        steps = ", ".join(f"{k} {n}" for k, n in sorted(self.steps.items()))
        out = [f"model: {sum(self.schedules.values())} schedules ({per}) in {self.seconds:.0f}s; "
               f"{sum(self.faults.values())} faults injected ({faults}); {steps}; "
               f"{self.runs} job runs",
               "model: violations of known defects: "
               + (", ".join(f"{k} x{n}" for k, n in sorted(self.known.items())) or "none")
               + f"; unknown: {self.unknown}"]
        return out + [f"model: replay: {r}" for r in self.replays]


TALLY = Tally()
