"""A managed child process on a loopback port: start, wait until ready, pause, stop, clean up.

Real Prometheus and Alertmanager binaries run under this helper in tests and in the demo.
Every wait has a deadline, and every process is stopped again: explicitly, by the context
manager, by an `atexit` hook, and (when started from the main thread) by the kernel through
PR_SET_PDEATHSIG if the Python process dies without running its exit hooks.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from telemetry_sandbox import httpjson
from telemetry_sandbox.loopback import LOOPBACK_HOST, free_port

__all__ = ["ManagedProcess", "ProcessStartError", "free_port", "stop_all"]

CommandFactory = Callable[[int], Sequence[str]]
"""Builds the argv for a given port, so a start can be retried on a fresh port."""

_PORT_TAKEN_MARKERS = ("address already in use", "bind: address")
_MAX_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost", "::1")

_running: set[ManagedProcess] = set()
_running_lock = threading.Lock()


class ProcessStartError(RuntimeError):
    """The process exited or never became ready; the message ends with its log tail."""


def stop_all() -> None:
    """Stop every process this module started and has not stopped yet (atexit hook)."""
    with _running_lock:
        processes = list(_running)
    for process in processes:
        process.stop()


atexit.register(stop_all)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once (the running interpreter already links libc)."""
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


def _death_signal_preexec() -> Callable[[], None] | None:
    """Ask the kernel to SIGKILL the child when its parent thread dies (Linux only).

    PDEATHSIG fires when the *thread* that forked exits, so it is only used for processes
    started from the main thread; others rely on stop()/atexit.
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return preexec


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The parent's environment, with loopback exempted from any HTTP proxy settings."""
    env = {**os.environ, **(extra or {})}
    for name in ("NO_PROXY", "no_proxy"):
        existing = [part for part in env.get(name, "").split(",") if part]
        env[name] = ",".join([*existing, *(h for h in _LOOPBACK_NO_PROXY if h not in existing)])
    return env


class ManagedProcess:
    """One child process bound to a loopback port, with its own work directory and log file."""

    def __init__(
        self,
        name: str,
        command: CommandFactory,
        *,
        ready_path: str | None = "/-/ready",
        port: int | None = None,
        workdir: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 30.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.name = name
        self._command = command
        self._ready_path = ready_path
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix=f"telemetry-sandbox-{name}-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self._env = dict(env) if env is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._paused = False
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the process, e.g. http://127.0.0.1:40123."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running child, None when not started or already stopped."""
        return self._proc.pid if self._proc is not None and self.is_running else None

    @property
    def is_running(self) -> bool:
        """True while the child exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between pause() and resume()."""
        return self._paused and self.is_running

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run, None while running or never started."""
        return None if self._proc is None else self._proc.poll()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and block until its readiness URL answers 200 (or raise)."""
        with self._lock:
            if self.is_running:
                return self
            attempts = 1 if self._fixed_port else _MAX_PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                try:
                    self._spawn()
                    self._wait_ready()
                    self._fixed_port = True  # later starts keep the URL others hold
                    return self
                except ProcessStartError:
                    port_taken = self._log_mentions_port_taken()
                    self.stop()
                    if attempt == attempts or not port_taken:
                        raise
                    self.port = free_port()
                except BaseException:  # e.g. KeyboardInterrupt while waiting: no orphan
                    self.stop()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; a paused child is woken to die."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if self._paused:
                    proc.send_signal(signal.SIGCONT)
                try:
                    proc.wait(timeout=self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            self._paused = False
            if self._log is not None:
                self._log.close()
                self._log = None
            with _running_lock:
                _running.discard(self)

    def restart(self) -> Self:
        """Stop and start again on the same port, keeping the work directory (and its data)."""
        with self._lock:
            self.stop()
            return self.start()

    def pause(self) -> None:
        """SIGSTOP the child: it keeps its socket but answers nothing, like a hung server."""
        with self._lock:
            if not self.is_running:
                raise RuntimeError(f"{self.name} is not running")
            assert self._proc is not None
            self._proc.send_signal(signal.SIGSTOP)
            _wait_stopped(self._proc.pid)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused child."""
        with self._lock:
            if self._proc is not None and self.is_running:
                self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop, then remove the work directory if this object created it."""
        self.stop()
        if self._owns_workdir and os.environ.get("TELEMETRY_SANDBOX_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ raises
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- diagnostics ------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the process log, for error messages."""
        try:
            with self.log_path.open("r", errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<ManagedProcess {self.name} {self.url} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _spawn(self) -> None:
        argv = [str(arg) for arg in self._command(self.port)]
        if not Path(argv[0]).exists() and shutil.which(argv[0]) is None:
            raise ProcessStartError(f"{self.name}: executable {argv[0]!r} not found")
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        self._log.flush()
        env = _child_env(self._env)
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_death_signal_preexec(),  # only calls prctl
        )
        self._paused = False
        with _running_lock:
            _running.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        ready_url = f"{self.url}{self._ready_path}" if self._ready_path is not None else None
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ProcessStartError(
                    f"{self.name} exited with status {self._proc.returncode} before becoming "
                    f"ready; log tail ({self.log_path}):\n{self.log_tail()}"
                )
            if ready_url is None or _answers_ok(ready_url):
                return
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{self.name} not ready at {ready_url} within {self.ready_timeout_s}s; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _log_mentions_port_taken(self) -> bool:
        tail = self.log_tail(20).lower()
        return any(marker in tail for marker in _PORT_TAKEN_MARKERS)


def _answers_ok(url: str, timeout_s: float = 0.5) -> bool:
    """One readiness probe: True on HTTP 200, False on any error or other status."""
    try:
        with httpjson.OPENER.open(url, timeout=timeout_s) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ConfiguredServer:
    """A server process started from a config file we write (Prometheus, Alertmanager).

    Subclasses set `self.process` and implement `write_config()`; this class gives them one
    lifecycle: start writes the config and waits for readiness, restart keeps the port and
    the data, close removes the throw-away directory.
    """

    process: ManagedProcess

    def write_config(self) -> object:
        """Write the server's config file into its work directory."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123."""
        return self.process.url

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return self.process.port

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the form scrape and alerting configs want."""
        return f"{LOOPBACK_HOST}:{self.port}"

    def start(self) -> Self:
        """Write the config, start the binary and wait until it is ready."""
        self.write_config()
        self.process.start()
        return self

    def stop(self) -> None:
        """Stop the process (its data directory is kept for restart())."""
        self.process.stop()

    def close(self) -> None:
        """Stop and delete the throw-away directory."""
        self.process.close()

    def restart(self) -> Self:
        """Stop and start on the same port; stored data survives."""
        self.write_config()
        self.process.restart()
        return self

    def pause(self) -> None:
        """SIGSTOP: the API hangs until resume() (a slow or hung server)."""
        self.process.pause()

    def resume(self) -> None:
        """SIGCONT after pause()."""
        self.process.resume()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ raises
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_stopped(pid: int, timeout_s: float = 2.0) -> None:
    """Return once every thread of `pid` is stopped (state T in /proc).

    kill(SIGSTOP) returns before the group stop completes: a Go server's threads can still
    answer a request or two for a few milliseconds (seen as a "paused" Prometheus answering
    a query 1 ms after pause()). Bounded: gives up silently after `timeout_s` (the process
    may have exited; callers see that through is_running)."""
    deadline = time.monotonic() + timeout_s
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        try:
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                      for task in tasks.iterdir()]
        except OSError:  # exited, or a thread went away while listed
            states = []
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)
