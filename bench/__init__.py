"""gatekeeper's benchmarks: reaction time, evaluation scale, verdict API throughput, log scans.

`python -m bench` (or `make bench`) runs all five, each printing a table and writing
`bench/results/<name>.json`; `--only NAME` runs one. Everything runs on loopback, is bounded
in time and count, and stops the processes it starts. docs/performance.md has the figures.
"""
