"""Benchmarks for pgveil (run as modules, e.g. ``python -m bench.pgbench``); not part of the installed package."""
