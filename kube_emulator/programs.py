"""What a run-to-completion container does in the emulator: its scripted runs.

There are no real images, so a test says what an image "does" when it runs: how long it
runs, what it writes to its log and its exit code. A pod whose `restartPolicy` is `Never`
or `OnFailure` (a Job's pod) runs its containers by that script; a container without one
keeps running until it is deleted (or its Job's deadline ends it), like a test image that
hangs. Two ways to script:

- by image, for the pods a program under test creates (`Emulator.script_image`, or
  `POST /_emulator/images`): each run of the image takes the next entry of `runs`, the
  last one repeats (so `[fail, succeed]` is "fails once, then passes");
- on the pod itself, with annotations (`kube-emulator.io/exit-code`,
  `kube-emulator.io/run-seconds`, `kube-emulator.io/log`: lines separated by newlines),
  for pods and Job templates written by hand. Annotations win over an image script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

EXIT_CODE = "kube-emulator.io/exit-code"
RUN_SECONDS = "kube-emulator.io/run-seconds"
LOG = "kube-emulator.io/log"
RUN_TO_COMPLETION = ("Never", "OnFailure")


@dataclass(frozen=True)
class Run:
    """One run of a container: log lines written at start, then exit after `seconds`."""

    exit_code: int = 0
    seconds: float = 0.0
    logs: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        """Decode `{"exitCode": 1, "seconds": 0.5, "logs": ["..."]}`; 400 for bad values."""
        unknown = set(data) - {"exitCode", "seconds", "logs"}
        if unknown:
            raise bad_request(f"unknown run fields: {', '.join(sorted(unknown))}")
        code, seconds, logs = data.get("exitCode", 0), data.get("seconds", 0.0), \
            data.get("logs", [])
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise bad_request('"exitCode" must be an integer from 0 to 255')
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise bad_request('"seconds" must be a number >= 0')
        if isinstance(logs, str):
            logs = [logs]
        if not isinstance(logs, list) or not all(isinstance(x, str) for x in logs):
            raise bad_request('"logs" must be a list of strings')
        return cls(exit_code=code, seconds=float(seconds), logs=tuple(logs))


def _annotated_run(annotations: Mapping[str, str]) -> Run | None:
    if EXIT_CODE not in annotations:
        return None
    try:
        code = int(annotations[EXIT_CODE])
        seconds = float(annotations.get(RUN_SECONDS, "0"))
    except ValueError:
        raise bad_request(f"{EXIT_CODE} must be an integer and {RUN_SECONDS} a number") \
            from None
    text = annotations.get(LOG, "")
    return Run(exit_code=code, seconds=max(seconds, 0.0),
               logs=tuple(text.split("\n")) if text else ())


class ContainerPrograms:
    """Scripted runs per image, and how many times each image has run."""

    def __init__(self) -> None:
        self._scripts: dict[str, tuple[Run, ...]] = {}
        self._runs: dict[str, int] = {}

    def script(self, image: str, runs: Iterable[Run]) -> None:
        """Set what IMAGE does on each run (the last run repeats); resets its run count."""
        script = tuple(runs)
        if not image or not script:
            raise bad_request("an image and at least one run are required")
        self._scripts[image] = script
        self._runs[image] = 0

    def clear(self) -> None:
        """Forget every script."""
        self._scripts.clear()
        self._runs.clear()

    def runs_of(self, image: str) -> int:
        """How many times IMAGE has been started."""
        return self._runs.get(image, 0)

    def next_run(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> Run | None:
        """What this container does now (None: it runs until deleted). Counts the run."""
        spec = pod.get("spec") or {}
        if spec.get("restartPolicy") not in RUN_TO_COMPLETION:
            return None
        annotated = _annotated_run((pod.get("metadata") or {}).get("annotations") or {})
        if annotated is not None:
            return annotated
        image = str(container.get("image", ""))
        script = self._scripts.get(image)
        if script is None:
            return None
        count = self._runs.get(image, 0)
        self._runs[image] = count + 1
        return script[min(count, len(script) - 1)]
