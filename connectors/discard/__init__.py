"""``type: discard``: a sink that accepts every batch and keeps nothing (dry runs, benchmarks)."""
