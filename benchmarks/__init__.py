"""`make bench`: dj_consumer against the bare row protocol and real Ruby delayed_job workers.

Entry point: `python -m benchmarks.run --help`. Every measured worker runs in its own
process (benchmarks.child), so one run's numbers are comparable with each other.
"""
