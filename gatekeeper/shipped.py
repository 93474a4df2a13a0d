"""Where the rule files shipped with gatekeeper are.

The source of truth is the repository's top-level `rules/`; setup.py packages it inside the
wheel as `gatekeeper/shipped_rules/`, so `pip install` users have `default.yaml` without a
checkout. An editable install (or a checkout on sys.path) has no such folder in the package
(setuptools cannot map a data folder into a package in editable mode): there the
checkout's `rules/` is used. No I/O beyond looking at the two paths.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGED_NAME", "rule_files", "rules_dir"]

PACKAGED_NAME = "shipped_rules"
_PACKAGE = Path(__file__).resolve().parent


def rules_dir() -> Path:
    """The folder of the shipped rule files; FileNotFoundError naming both places tried."""
    packaged = _PACKAGE / PACKAGED_NAME
    checkout = _PACKAGE.parent / "rules"
    for candidate in (packaged, checkout):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no shipped rules: neither {packaged} nor {checkout} holds "
                            "default.yaml (a broken installation: reinstall gatekeeper)")


def rule_files() -> list[Path]:
    """Every shipped rule file (`*.yaml`, subfolders such as examples/ included), sorted."""
    root = rules_dir()
    return sorted(root.rglob("*.yaml"))
