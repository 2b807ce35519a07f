"""The benchmark suite: `bash bench/run.sh` (see BENCHMARKS.md)."""
