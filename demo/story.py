"""The three acts. Each one does only what a release pipeline would do (change images, ask
`gatekeeper check`), then checks that gatekeeper and the monitoring stack reacted as the
story says, failing loudly with what was expected and what gatekeeper said instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from demo.cluster import BLUE, GREEN
from demo.narration import Narrator, Snapshot
from demo.stack import MIRROR_PERCENT, PAIR, Stack
from gatekeeper.durations import parse_duration
from telemetry_sandbox import httpjson


class ActFailed(Exception):
    """An act did not behave as the story says; the message says what and why."""


@dataclass(frozen=True)
class ActResult:
    """How one act went."""

    number: int
    title: str
    passed: bool
    seconds: float
    summary: str


class Story:
    """Plays the acts against a running stack, within a deadline."""

    def __init__(self, stack: Stack, narrator: Narrator, *, deadline: float) -> None:
        self.stack = stack
        self.narrator = narrator
        self.deadline = deadline
        self.timing = stack.timing

    # -- helpers ---------------------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[Snapshot], bool], timeout_s: float) -> Snapshot:
        """Poll the narrator's readings until `check` holds; ActFailed naming `what` if not."""
        limit = min(time.time() + timeout_s, self.deadline)
        while True:
            snapshot = self.narrator.read()
            if snapshot.pair and check(snapshot):
                return snapshot
            if time.time() >= limit:
                pair = snapshot.pair
                within = (f"within {timeout_s:.0f}s" if limit < self.deadline
                          else "before the demo's time budget ran out")
                raise ActFailed(
                    f"expected {what} {within}, but gatekeeper says phase "
                    f"{pair.get('phase')!r}, active {pair.get('active')!r}, verdict "
                    f"{pair.get('verdict')!r}: {pair.get('reason')!r}; the route points at "
                    f"{snapshot.active!r}")
            time.sleep(0.2)

    def wait_replicas(self, namespace: str, replicas: int, timeout_s: float) -> None:
        """Until the namespace's Deployment asks for `replicas` (gatekeeper scaled it)."""
        limit = min(time.time() + timeout_s, self.deadline)
        while True:
            view = self.stack.cluster.namespace(namespace)
            if view.replicas == replicas:
                return
            if time.time() >= limit:
                raise ActFailed(f"expected gatekeeper to scale {namespace} to {replicas} "
                                f"replicas within {timeout_s:.0f}s; it has {view.replicas}")
            time.sleep(0.2)

    def deploy(self, namespace: str, version: str, title: str) -> None:
        """The pipeline's first step: new images in the dark namespace, nothing else."""
        self.narrator.say("pipeline", f"deploy {title}: set image registry.example.com/api:"
                                      f"{version} in {namespace} (dark)")
        self.stack.cluster.deploy(namespace, version)
        self.narrator.mark("release", f"{version} → {namespace.removeprefix('production-')}")

    def counter(self, snapshot: Snapshot, name: str, **labels: str) -> float:
        """One counter from gatekeeper's /metrics (0 when the series does not exist yet)."""
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return snapshot.metrics.get(f"{name}{{{text}}}", 0.0)

    def fresh_metrics(self) -> Snapshot:
        """Readings whose metrics are at least one narrator round newer than now."""
        time.sleep(0.6)
        return self.narrator.read()

    def transition_at(self, snapshot: Snapshot, target: str) -> float | None:
        """When the audit trail last shows the phase entering `target`."""
        times = [float(entry["at"]) for entry in snapshot.pair.get("history") or []
                 if entry.get("kind") == "phase" and entry.get("to") == target]
        return max(times) if times else None

    @staticmethod
    def last_phase(snapshot: Snapshot) -> str | None:
        """The phase the audit trail's latest phase transition entered. The pair API shows a
        new phase as soon as it is decided and its history once the record is written, so a
        wait on a phase also waits for this."""
        entries = [e for e in snapshot.pair.get("history") or [] if e.get("kind") == "phase"]
        return str(entries[-1].get("to")) if entries else None

    # -- prologue --------------------------------------------------------------------------------

    def prologue(self) -> None:
        """Everything is up: traffic on blue, green scaled to zero, gatekeeper idle."""
        self.narrator.banner("Prologue: production-blue serves release N (1.4.0); "
                             "production-green is dark, scaled to 0")
        self.stack.prometheus.wait_for_scrapes("api", timeout_s=max(
            1.0, min(30.0, self.deadline - time.time())))
        self.narrator.say("Prometheus", "scraping both namespaces' apps and gatekeeper every 1s")
        self.wait("gatekeeper to watch the pair (phase idle, blue active)",
                  lambda s: s.pair.get("phase") == "idle" and s.pair.get("active") == BLUE
                  and s.active == BLUE, 40)

    # -- act 1 -----------------------------------------------------------------------------------

    def act1(self) -> str:
        """N+1 lands in the dark; gatekeeper scales it up, soaks, and flips by itself."""
        self.narrator.mark("act", "Act 1: N+1 flips by itself")
        self.narrator.banner("Act 1: release N+1 lands in the dark namespace; gatekeeper "
                             "validates it and flips by itself")
        self.deploy(GREEN, "1.5.0", "release N+1")
        self.wait("phase validating after new images in production-green",
                  lambda s: s.pair.get("phase") == "validating", 15)
        self.wait_replicas(GREEN, 2, 15)
        self.narrator.say("check", "verified: production-green's Deployment now asks for 2 "
                                   "replicas")
        mirroring = self.mirroring_while_validating()
        pending = self.pending_during_soak()
        soak = parse_duration(self.timing.soak)
        snapshot = self.wait("an automatic flip to production-green",
                             lambda s: s.pair.get("phase") == "flipped" and s.active == GREEN
                             and self.last_phase(s) == "flipped", 60 + soak)
        started = self.transition_at(snapshot, "validating")
        flipped = self.transition_at(snapshot, "flipped")
        if started is None or flipped is None:
            raise ActFailed("the audit trail lacks the validating or flipped transition: "
                            f"{snapshot.pair.get('history')}")
        if flipped - started < soak:
            raise ActFailed(f"flipped {flipped - started:.1f}s after validation began, before "
                            f"the {soak:.0f}s soak was over")
        metrics = self.fresh_metrics()
        flips = self.counter(metrics, "gatekeeper_flips_total", pair=PAIR, trigger="auto")
        if flips != 1:
            raise ActFailed(f"expected gatekeeper_flips_total{{trigger=auto}} = 1, got {flips}")
        synthetic = self.counter(metrics, "gatekeeper_load_requests_total", pair=PAIR)
        if synthetic <= 0:
            raise ActFailed("production-green had no user traffic before the flip, yet "
                            "gatekeeper_load_requests_total is 0: where did its evidence "
                            "come from?")
        self.narrator.say("check", f"production-green's evidence: {synthetic:.0f} synthetic "
                                   "requests gatekeeper sent it while validating (no user "
                                   "traffic reached it before the flip)")
        plan = self.stack.cluster.dispatch()
        if plan.mirrors or plan.users != {GREEN: 1.0}:
            raise ActFailed(f"after the flip api-weighted should send every user to "
                            f"production-green without mirroring; Traefik would: {plan}")
        self.narrator.say("check", f"{mirroring}; gatekeeper removed the mirroring before the "
                                   "flip: api-weighted now sends every user to "
                                   "production-green")
        observation = parse_duration(self.timing.observation)
        self.wait("the observation window to pass and the pair to become stable",
                  lambda s: s.pair.get("phase") == "stable", observation + 20)
        self.wait_replicas(BLUE, 0, 10)
        self.narrator.say("check", "observation passed: gatekeeper scaled production-blue "
                                   "down to 0 (the seed's pipeline 3)")
        return (f"gates pending during the soak ({pending}), flipped to production-green by "
                f"itself {flipped - started:.0f}s after validation began, old namespace scaled "
                "down after the observation window")

    def mirroring_while_validating(self) -> str:
        """While green validates, Traefik copies MIRROR_PERCENT % of production to it."""
        limit = min(time.time() + 30, self.deadline)
        while True:
            plan = self.stack.cluster.dispatch()
            copies = self.stack.traffic.mirrored.get(GREEN, 0)
            if plan.mirrors.get(GREEN) == MIRROR_PERCENT and copies > 0:
                break
            if time.time() >= limit:
                raise ActFailed(f"expected gatekeeper to mirror {MIRROR_PERCENT} % of "
                                f"production to production-green while it validates; Traefik "
                                f"would: {plan}, copies sent: {copies}")
            time.sleep(0.2)
        self.narrator.say("check", f"mirroring: Traefik copies {MIRROR_PERCENT} % of "
                                   "production-blue's requests to production-green (answers "
                                   "discarded, maxBodySize 65536)")
        return f"{self.stack.traffic.mirrored.get(GREEN, 0)} mirrored copies reached it"

    def pending_during_soak(self) -> str:
        """Ask the pipelines' question while the gates pass but the soak is not over: the
        answer must be 409, naming the soak."""
        self.wait("production-green's gates passing while the soak holds the flip",
                  lambda s: s.pair.get("phase") == "validating"
                  and "consecutive passes" in str(s.pair.get("reason")), 40)
        status, reasons = self.flip_check()
        self.narrator.say("check", f"GET flip-check while soaking: {status}, not yet\n"
                          + "\n".join(f"  - {r}" for r in reasons))
        if status != 409:
            raise ActFailed(f"flip-check during the soak answered {status}, expected 409")
        if not any("soaked" in r for r in reasons):
            raise ActFailed(f"flip-check during the soak did not name it: {reasons}")
        return "flip-check answered 409 naming the soak"

    def flip_check(self) -> tuple[int, list[str]]:
        """The pipelines' question over HTTP: (status, reasons)."""
        url = f"{self.stack.gatekeeper_url}/api/v1/pairs/{PAIR}/flip-check"
        try:
            status, body = httpjson.request("GET", url, timeout_s=5)
        except httpjson.HTTPStatusError as exc:
            status, body = exc.status, exc.body.encode()
        try:
            reasons = [str(r) for r in json.loads(body).get("reasons") or []]
        except (ValueError, AttributeError):
            reasons = [body[:200].decode(errors="replace")]
        return status, reasons

    # -- act 2 -----------------------------------------------------------------------------------

    def act2(self) -> str:
        """N+2 serves 5% errors in the dark: the pipeline's check is refused, nothing flips."""
        self.narrator.mark("act", "Act 2: broken N+2 refused")
        self.narrator.banner("Act 2: release N+2 is broken (5% errors in the dark namespace); "
                             "the pipeline's check is refused")
        self.deploy(BLUE, "1.6.0", "release N+2")
        command = ["gatekeeper", "check", "--url", self.stack.gatekeeper_url, "--pair", PAIR,
                   "--wait", self.timing.check_wait, "--quiet"]
        self.narrator.say("pipeline", "$ " + " ".join(command) + "   # go only on a safe answer")
        process = subprocess.Popen([sys.executable, "-m", "gatekeeper", *command[1:]],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            self.wait("phase validating after new images in production-blue",
                      lambda s: s.pair.get("phase") == "validating", 15)
            self.wait_replicas(BLUE, 2, 15)
            self.narrator.say("check", "verified: production-blue's Deployment now asks for 2 "
                                       "replicas")
            limit = parse_duration(self.timing.check_wait) + 60
            try:
                output, _ = process.communicate(
                    timeout=max(1.0, min(limit, self.deadline - time.time())))
            except subprocess.TimeoutExpired as exc:
                raise ActFailed(f"`gatekeeper check` did not finish within {limit:.0f}s") from exc
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        output = output.strip()
        self.narrator.say("pipeline", f"exit {process.returncode}\n{output}")
        self.narrator.mark("refused", "check refused")
        if process.returncode != 1:
            raise ActFailed(f"`gatekeeper check` exited {process.returncode}, expected 1 (not "
                            f"safe): {output}")
        if "error-rate" not in output:
            raise ActFailed(f"`gatekeeper check` did not name the error rate: {output}")
        snapshot = self.fresh_metrics()
        if snapshot.active != GREEN or snapshot.pair.get("phase") in ("ready", "flipped"):
            raise ActFailed(f"release N+2 must not flip: route at {snapshot.active}, phase "
                            f"{snapshot.pair.get('phase')}")
        flips = sum(v for k, v in snapshot.metrics.items()
                    if k.startswith("gatekeeper_flips_total{"))
        if flips != 1:
            raise ActFailed(f"expected still exactly one flip, gatekeeper counted {flips}")
        first = next((line for line in output.splitlines() if "error-rate" in line), "")
        return f"`gatekeeper check` exited 1 naming {first.strip(' -')[:90]}...; no flip"

    # -- act 3 -----------------------------------------------------------------------------------

    def act3(self) -> str:
        """N+3 passes and is flipped, then degrades; the alert chain rolls it back."""
        self.narrator.mark("act", "Act 3: N+3 flips, degrades, rolled back")
        self.narrator.banner("Act 3: release N+3 passes and is flipped, then degrades; "
                             "Prometheus → Alertmanager → gatekeeper rolls back")
        before = self.narrator.read().pair.get("lifecycle", {}).get("release")
        self.deploy(BLUE, "1.7.0", "release N+3")
        self.wait("gatekeeper to start validating release N+3",
                  lambda s: s.pair.get("phase") == "validating"
                  and s.pair.get("lifecycle", {}).get("release") != before, 15)
        soak = parse_duration(self.timing.soak)
        window = parse_duration(self.timing.window)
        self.wait("an automatic flip to production-blue once N+2's errors left the window",
                  lambda s: s.pair.get("phase") == "flipped" and s.active == BLUE,
                  60 + soak + window)
        snapshot = self.wait(
            "an Alertmanager-triggered rollback to production-green",
            lambda s: s.pair.get("phase") == "rolled_back" and s.active == GREEN
            and self.last_phase(s) == "rolled_back", 45)
        history = snapshot.pair.get("history") or []
        trigger = next((e.get("trigger") for e in reversed(history)
                        if e.get("kind") == "phase" and e.get("to") == "rolled_back"), None)
        if trigger != "alertmanager":
            raise ActFailed(f"the rollback was triggered by {trigger!r}, not by Alertmanager")
        metrics = self.fresh_metrics()
        latency = self.latency(metrics, "rollback")
        self.narrator.say("rollback", f"webhook received → route patched and verified in "
                                      f"{latency * 1000:.0f} ms "
                                      "(gatekeeper_action_latency_seconds)")
        self.narrator.say("story", "both Alertmanagers deliver the alert, and repeat it; "
                                   "gatekeeper must act only once")
        metrics = self.wait("webhook calls from both Alertmanagers",
                            lambda s: self.webhook_calls(s) >= 2, 10)
        # A repeat or two, and production-green serving again, for the picture.
        time.sleep(min(6.0, max(0.0, self.deadline - time.time())))
        metrics = self.fresh_metrics()
        rollbacks = {k: v for k, v in metrics.metrics.items()
                     if k.startswith("gatekeeper_rollbacks_total{") and v}
        if list(rollbacks.values()) != [1.0] or "alertmanager" not in next(iter(rollbacks)):
            raise ActFailed(f"expected exactly one rollback, by alertmanager: {rollbacks}")
        if metrics.active != GREEN:
            raise ActFailed(f"traffic left production-green again: {metrics.active}")
        return (f"rolled back to production-green by Alertmanager's webhook in "
                f"{latency * 1000:.0f} ms; {self.webhook_calls(metrics):.0f} webhook calls, "
                "one rollback")

    def webhook_calls(self, snapshot: Snapshot) -> float:
        """Alertmanager webhook requests gatekeeper counted, whatever became of them."""
        return sum(v for k, v in snapshot.metrics.items()
                   if k.startswith("gatekeeper_webhook_requests_total{"))

    def latency(self, snapshot: Snapshot, action: str) -> float:
        """Mean of gatekeeper_action_latency_seconds for one action (one rollback: exact)."""
        total = snapshot.metrics.get(
            f'gatekeeper_action_latency_seconds_sum{{action="{action}"}}')
        count = snapshot.metrics.get(
            f'gatekeeper_action_latency_seconds_count{{action="{action}"}}')
        if not total or not count:
            raise ActFailed(f"gatekeeper exported no {action} latency")
        return total / count


ACTS: tuple[tuple[int, str, str], ...] = (
    (1, "release N+1 validated and flipped automatically", "act1"),
    (2, "broken release N+2 refused, no flip", "act2"),
    (3, "release N+3 flipped, degraded, rolled back by Alertmanager", "act3"),
)


def play(story: Story) -> list[ActResult]:
    """Run the prologue and the acts in order; stop at the first act that fails."""
    story.prologue()
    results: list[ActResult] = []
    for number, title, method in ACTS:
        started = time.time()
        try:
            summary = getattr(story, method)()
        except (ActFailed, OSError, httpjson.HTTPStatusError) as exc:
            results.append(ActResult(number, title, False, time.time() - started, str(exc)))
            story.narrator.say("FAILED", f"ACT {number} FAILED: {exc}")
            break
        results.append(ActResult(number, title, True, time.time() - started, summary))
        story.narrator.say("passed", f"ACT {number} PASSED: {summary}")
    return results
