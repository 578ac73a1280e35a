"""Command-line benchmarks (`python -m benchmarks.<name>`): on top of the import graph, beside
main.py, so they may use every package."""
