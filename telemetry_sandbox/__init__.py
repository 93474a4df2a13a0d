"""Telemetry sandbox: real Prometheus and Alertmanager processes plus synthetic services.

Tests and the demo exercise gatekeeper against the real monitoring stack on loopback
ports with throw-away data directories. This package must not import `gatekeeper`.
"""

from telemetry_sandbox.alertmanager import AlertmanagerServer, make_alert
from telemetry_sandbox.latency import DEFAULT_BUCKETS, LatencyDistribution
from telemetry_sandbox.loadgen import run_load
from telemetry_sandbox.processes import ManagedProcess, ProcessStartError, free_port
from telemetry_sandbox.profile import TrafficProfile
from telemetry_sandbox.prometheus import PrometheusServer, ScrapeTarget, values_by_label
from telemetry_sandbox.synthetic_app import SyntheticApp
from telemetry_sandbox.synthetic_fleet import SyntheticFleet

__all__ = [
    "DEFAULT_BUCKETS",
    "AlertmanagerServer",
    "LatencyDistribution",
    "ManagedProcess",
    "ProcessStartError",
    "PrometheusServer",
    "ScrapeTarget",
    "SyntheticApp",
    "SyntheticFleet",
    "TrafficProfile",
    "free_port",
    "make_alert",
    "run_load",
    "values_by_label",
]
