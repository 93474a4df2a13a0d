"""Packaging: `pip install .` ships the rules; the Dockerfile's properties.

The install test builds the wheel from a copy of the source tree into a new virtualenv
(pip's own cache and the package index already configured here; bounded by timeouts) and
runs the installed `gatekeeper rules validate` away from any checkout. There is no Docker
daemon here, so the Dockerfile is parsed, not built.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatekeeper import shipped

ROOT = Path(__file__).resolve().parent.parent
# What the wheel is built from: the tracked source, not the venv, caches or build output.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "__pycache__",
                                     ".*_cache", ".hypothesis", "demo-output", "bench")


def _run(command: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a wheel build and a dependency install; minutes on a busy machine
def test_pip_install_ships_the_rules_and_rules_validate_works(tmp_path):
    """In a clean venv, `pip install .` gives `gatekeeper rules validate` on the shipped
    rules (default.yaml among them) from inside the installed package, no checkout."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                      str(source)], cwd=tmp_path, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shutil.rmtree(source)  # nothing may still come from the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = _run([str(venv / "bin" / "gatekeeper"), "rules", "shipped"], cwd=elsewhere,
                  timeout=120)
    assert listed.returncode == 0, listed.stderr
    files = [Path(line) for line in listed.stdout.splitlines()]
    packaged = {path.relative_to(venv).as_posix().split(f"/{shipped.PACKAGED_NAME}/")[1]
                for path in files}
    expected = {p.relative_to(ROOT / "rules").as_posix() for p in (ROOT / "rules").rglob("*.yaml")}
    assert packaged == expected
    assert all(f"site-packages/gatekeeper/{shipped.PACKAGED_NAME}/" in str(p) for p in files)
    validated = _run([str(venv / "bin" / "gatekeeper"), "rules", "validate"], cwd=elsewhere,
                     timeout=120)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    default = next(line for line in validated.stdout.splitlines() if "/default.yaml:" in line)
    assert default.startswith("ok: ") and "rules valid" in default


def test_shipped_rules_are_found_in_this_checkout():
    """The editable install (make venv) finds the checkout's rules/ itself."""
    assert shipped.rules_dir() == ROOT / "rules"
    assert ROOT / "rules" / "default.yaml" in shipped.rule_files()


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
    install = re.search(r"pip install[^\n]*\s\.(\s|$)", dockerfile)
    assert install, "the image does not `pip install .`"
    copied = " ".join(re.findall(r"^COPY\s+(.+)$", dockerfile[:install.start()], re.MULTILINE))
    for needed in ("pyproject.toml", "setup.py", "README.md", "gatekeeper", "rules"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|/|$)", copied), (
            f"{needed} is not copied before `pip install .`")
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
