"""Job runs a Rails app can poll: run records, cancel, batches (README "Job runs")."""
