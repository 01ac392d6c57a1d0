"""Feature building: pure functions from canonical tables to model inputs (no I/O, no Prefect)."""
