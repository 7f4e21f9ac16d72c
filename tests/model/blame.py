"""Which known defect explains a violation: issue #12's numbers, or N1 (found by this test).

Attribution keeps the suite running while the fixes land (test_model.XFAIL_DEFECTS); a
violation none of these explains fails the test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.model.driver import Played

if TYPE_CHECKING:
    from tests.model.model import Run

SLACK = 0.5  # seconds: a trace line and the statement it stands next to are not simultaneous


def returns(p: Played) -> dict[str, float]:
    return {e["worker"]: e["t"] for e in p.events if e["ev"] == "returned"}


def blame_crash(p: Played, worker: str, t: float | None = None) -> str | None:
    """Why a worker's start() raised: #3, a non-database error while writing an outcome (an
    interrupt's unlock included) escaped instead of being handled like a refused write; N1
    (not in issue #12), one from the shutdown's release escaped, leaving its slots' rows
    locked and the other slots unreleased."""
    faults = [e for e in p.events if e["ev"] == "fault" and e["worker"] == worker
              and (t is None or e["t"] <= t)]
    last = faults[-1] if faults else None
    if last is None or last["fault"] != "non_db":
        return None
    if last["stmt"] in ("interrupt", "reschedule", "fail", "delete"):
        return "3"
    return "N1" if last["stmt"] == "release" else None


def blame_rerun(p: Played, prev: Run, run: Run) -> str | None:
    """Which known defect explains a re-run nothing excuses (None: a new finding)."""
    if prev.action == "surrogate":
        return "3"  # the outcome write raised a non-database error: the row was served again
    for e in p.events:
        # A non-database error while writing its outcome, or while the reserve that carries
        # its DELETE ran: the slot served the row (still locked by it) again.
        if e["ev"] == "fault" and e["fault"] == "non_db" and prev.t0 - SLACK <= e["t"] <= run.t0 + SLACK \
                and (prev.id in e["ids"] or (e["worker"] == prev.worker == run.worker
                                             and e["stmt"] in ("reserve", "claim", "delete"))):
            return "3"
    if prev.worker in p.interrupts and prev.t0 <= p.interrupts[prev.worker] + SLACK:
        return "1"  # a success in hand at the interrupt was released instead of deleted
    returned = returns(p)
    if any(r.worker in returned and r.t0 > returned[r.worker] for r in (prev, run)):
        return "1"  # an abandoned slot ran it after its worker's start() returned
    return None


def blame_stuck(p: Played, row: dict[str, Any], last: Run | None) -> str | None:
    """A row of ours the quiet drain left waiting: #3 when the drain spent itself on a row
    whose outcome it could not write, #2 when enough look-alikes lie ahead of it."""
    if last is not None and last.action == "surrogate":
        return "3"
    if any(m.startswith("drain_raised") and "surrogates" in m for m in p.problems):
        return "3"  # the drain spent itself on the row whose outcome it could not write
    ahead = p.schedule.bulk + sum(1 for r in p.schedule.rows
                                  if r.kind == "lookalike" and r.priority <= row["priority"])
    return "2" if ahead and ahead >= p.schedule.drain_batch else None
