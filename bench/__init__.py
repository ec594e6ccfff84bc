"""Benchmarks: speed and memory, each against a baseline measured in the same run,
so the figures read as ratios whatever the machine. Run `python -m bench --help`."""
