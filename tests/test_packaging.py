"""Packaging: the Dockerfile's properties (no Docker daemon here, so it is parsed, not built)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _values() -> dict:
    return yaml.safe_load((ROOT / "helm" / "gatekeeper" / "values.yaml").read_text())


def test_dockerfile_pins_its_base_and_runs_as_non_root():
    """FROM a pinned python 3.11 slim tag (no floating `3.11-slim`), numeric non-root USER
    matching the chart's runAsUser, `pip install .`, entrypoint `gatekeeper serve`."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert bases, "no FROM line"
    for base in bases:
        image, _, tag = base.partition(":")
        assert image == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), (
            f"base image {base!r} is not pinned to a patch release and Debian suite")
    assert re.search(r"pip install[^\n]*\s\.(\s|$)", dockerfile)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and uid != "0" and gid != "0"
    assert int(uid) == _values()["podSecurityContext"]["runAsUser"]
    assert 'ENTRYPOINT ["gatekeeper", "serve"]' in dockerfile
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    assert "rules" not in ignored and "gatekeeper" not in ignored
