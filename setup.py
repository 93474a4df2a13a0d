"""What pyproject.toml cannot say: the top-level rules/ folder shipped inside the package.

rules/ stays where rule authors (and the Helm chart's `make sync-chart`) expect it; the wheel
carries it as gatekeeper/shipped_rules/ (gatekeeper/shipped.py finds it). Everything else
about the package is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gatekeeper*", "kube_emulator*", "telemetry_sandbox*"]),
              "gatekeeper.shipped_rules"],
    package_dir={"gatekeeper.shipped_rules": "rules"},
)
