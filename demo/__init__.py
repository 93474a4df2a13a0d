"""`make demo`: the whole release loop on one machine, narrated, with real Prometheus and
Alertmanager, an emulated Kubernetes API and `gatekeeper serve` as users run it.

Not installed with the package: run `python -m demo` from the repository root.
"""
