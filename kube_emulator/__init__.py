"""An emulated Kubernetes API server for tests and demos (no real cluster needed).

It speaks the real wire protocol (kubernetes_asyncio works unmodified) and keeps the
semantics that safety depends on: resourceVersion conflicts, JSON Patch `test` failures
as 422, watches with bookmarks and 410 Expired, and a Deployment -> ReplicaSet -> Pod
simulation with readiness delays. See docs/kube-emulator.md.
"""

from .emulator import Emulator
from .errors import ApiError
from .faults import FaultRule
from .server import EmulatorServer, running

__all__ = ["ApiError", "Emulator", "EmulatorServer", "FaultRule", "running"]
