"""Benchmark servers, each runnable as ``python bench/servers/<name>.py --port P``."""
