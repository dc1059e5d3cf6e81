"""shunter's benchmark suite: `make bench` (see BENCHMARKS.md)."""
