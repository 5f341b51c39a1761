"""Stand-alone performance measurements, run as modules (``python -m bench.benchmarks.<name>``); not tests."""
