"""Every metric gatekeeper exports, owned by one recorder (Flagger's recorder pattern).

The recorder is created against an injected registry, so tests never touch the global one.
Names follow Prometheus conventions: `gatekeeper_` prefix, base units, `_total` counters.
docs/metrics.md lists them; dashboards/ and alerts/ query exactly these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gatekeeper import __version__
from gatekeeper.measurements import Verdict
from gatekeeper.rules import Rule

RULE_STATUSES = ("pass", "warning", "fail", "no_data", "error")
VERDICTS = ("safe", "unsafe", "unknown")
TRIGGERS = ("auto", "manual", "alertmanager", "gates")
ACTIONS = ("scale_up", "flip", "rollback", "scale_down")
WEBHOOK_OUTCOMES = (
    "rollback", "duplicate", "ignored", "cooldown", "refused", "malformed", "unauthorized",
    "too_large",
)


class Recorder:
    """Owns and updates gatekeeper's metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("gatekeeper_build_info", "Always 1; the version as a label.",
                                ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.rule_status = Gauge(
            "gatekeeper_rule_status",
            "1 for the current status of a rule in a namespace (pass, warning, fail, no_data, "
            "error), 0 for the others.",
            ["pair", "namespace", "role", "rule", "status"], registry=r)
        self.rule_info = Gauge(
            "gatekeeper_rule_info",
            "Always 1: a rule's fixed facts (source, key, target as written in the rule file).",
            ["pair", "rule", "source", "key", "target"], registry=r)
        self.rule_value = Gauge(
            "gatekeeper_rule_value", "Last measured value of a rule in a namespace (NaN if none).",
            ["pair", "namespace", "role", "rule"], registry=r)
        self.score = Gauge(
            "gatekeeper_namespace_score_ratio",
            "Weighted rule score of a namespace, 0..1 (NaN when no rule could be evaluated).",
            ["pair", "namespace", "role"], registry=r)
        self.verdict = Gauge(
            "gatekeeper_verdict", "1 for the pair's current verdict on its dark namespace.",
            ["pair", "verdict"], registry=r)
        self._judged: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}
        """pair -> the per-namespace series (rule_status, rule_value, score) written for it:
        dropping a pair's stale series looks at its own, not every pair's (at 5,000 pairs a
        scan of all of them per pair made one tick take minutes)."""
        self.phase = Gauge(
            "gatekeeper_phase", "1 for the pair's current release phase, 0 for the others.",
            ["pair", "phase"], registry=r)
        self.phase_since = Gauge(
            "gatekeeper_phase_since_timestamp_seconds", "When the pair entered its phase.",
            ["pair"], registry=r)
        self.active = Gauge(
            "gatekeeper_active_namespace", "1 for the namespace that takes traffic, 0 for dark.",
            ["pair", "namespace"], registry=r)
        self.replicas = Gauge(
            "gatekeeper_namespace_replicas", "Desired replicas summed over a namespace's "
            "Deployments.", ["pair", "namespace"], registry=r)
        self.flips = Counter("gatekeeper_flips_total", "Traffic flips by trigger.",
                             ["pair", "trigger"], registry=r)
        self.rollbacks = Counter("gatekeeper_rollbacks_total", "Rollbacks by trigger.",
                                 ["pair", "trigger"], registry=r)
        self.evaluation_duration = Histogram(
            "gatekeeper_evaluation_duration_seconds", "Duration of one evaluation cycle.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.last_evaluation = Gauge(
            "gatekeeper_last_evaluation_timestamp_seconds", "When the pair was last evaluated.",
            ["pair"], registry=r)
        self.source_up = Gauge("gatekeeper_source_up",
                               "1 when the source answered in the last evaluation.",
                               ["source"], registry=r)
        self.source_errors = Counter("gatekeeper_source_errors_total",
                                     "Failed source calls (one per rule and evaluation).",
                                     ["source"], registry=r)
        self.webhook = Counter("gatekeeper_webhook_requests_total",
                               "Alertmanager webhook requests by outcome.", ["outcome"],
                               registry=r)
        self.action_latency = Histogram(
            "gatekeeper_action_latency_seconds",
            "From trigger (webhook received, decision taken) to the route patched and verified.",
            ["action"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r)
        for action in ACTIONS:  # exist at 0 before the first action, so rate() sees it
            self.action_latency.labels(action)
        self.state_unreadable = Counter(
            "gatekeeper_state_unreadable_total", "Stored state records that could not be read "
            "(wrong JSON, wrong types, an unknown phase) and were rebuilt from the routes.",
            ["pair"], registry=r)
        self.leader = Gauge("gatekeeper_leader", "1 when this replica holds the Lease.",
                            registry=r)
        self.long_polls = Gauge(
            "gatekeeper_long_polls", "Flip-checks waiting (?wait=) for the next evaluation.",
            registry=r)
        self.http_connections = Gauge(
            "gatekeeper_http_connections", "Open HTTP connections to the API and webhook.",
            registry=r)
        self.http_connections_closed = Counter(
            "gatekeeper_http_connections_closed_total",
            "Connections the server closed: read_timeout (no request in time), evicted (to "
            "make room at the connection limit), refused (every connection busy).",
            ["reason"], registry=r)
        self.notifications = Counter(
            "gatekeeper_notifications_total", "Notification messages by receiver and outcome: "
            "sent, failed (after the retries), dropped (its queue was full).",
            ["receiver", "kind", "outcome"], registry=r)
        self.actions_blocked = Counter(
            "gatekeeper_actions_refused_total", "Actions refused by a precondition or policy.",
            ["pair", "action"], registry=r)
        self.load_sent = Counter(
            "gatekeeper_load_requests_total", "Synthetic load requests sent to a pair's dark "
            "namespace (gatekeeper.drivers.load).", ["pair"], registry=r)
        self.load_failed = Counter(
            "gatekeeper_load_failed_total", "Synthetic load checks that failed, by reason: "
            "status, json, latency, connect, error.", ["pair", "reason"], registry=r)
        self.load_skipped = Counter(
            "gatekeeper_load_skipped_total", "Synthetic load requests not sent because "
            "`load.concurrency` requests were already in flight.", ["pair"], registry=r)
        self.load_rate = Gauge(
            "gatekeeper_load_rate", "Synthetic load rate in requests/s: `target` (after the "
            "ramp) and `achieved` (sent over the last seconds); 0 when not sending.",
            ["pair", "kind"], registry=r)

    # -- synthetic load ------------------------------------------------------------------------

    def record_load_sent(self, pair: str) -> None:
        """One synthetic request sent."""
        self.load_sent.labels(pair).inc()

    def record_load_failed(self, pair: str, reason: str) -> None:
        """One synthetic check failed for `reason`."""
        self.load_failed.labels(pair, reason).inc()

    def record_load_skipped(self, pair: str) -> None:
        """One synthetic request not sent: the concurrency bound was reached."""
        self.load_skipped.labels(pair).inc()

    def record_load_rate(self, pair: str, *, target: float, achieved: float) -> None:
        """The synthetic load's target and achieved rates (requests/s)."""
        self.load_rate.labels(pair, "target").set(target)
        self.load_rate.labels(pair, "achieved").set(achieved)

    # -- verdicts -----------------------------------------------------------------------------

    def record_verdict(self, verdict: Verdict) -> None:
        """Rule statuses and values, namespace scores and the verdict of one pair."""
        pair = verdict.pair
        self._drop_stale(verdict)
        judged = self._judged.setdefault(pair, set())

        def write(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
            gauge.labels(*labels).set(value)
            judged.add((gauge, labels))

        for ns_score in (verdict.candidate, verdict.baseline):
            role = "dark" if ns_score.role == "candidate" else "active"
            score = ns_score.score
            namespace = str(ns_score.namespace)
            write(self.score, (pair, namespace, role),
                  math.nan if score is None else score / 100.0)
            for result in ns_score.results:
                rule = str(result.rule)
                for status in RULE_STATUSES:
                    write(self.rule_status, (pair, namespace, role, rule, status),
                          1 if result.status == status else 0)
                value = result.value
                write(self.rule_value, (pair, namespace, role, rule),
                      math.nan if value is None else value)
        for name in VERDICTS:
            self.verdict.labels(pair, name).set(1 if verdict.verdict == name else 0)
        self.last_evaluation.labels(pair).set(verdict.evaluated_at)

    def _drop_stale(self, verdict: Verdict) -> None:
        """Remove the pair's per-namespace series this verdict does not write: a namespace
        under its former role (traffic moved, by gatekeeper or outside it: CLI, kubectl) or
        a rule no longer judged. Each rule then shows once per namespace, in its current role."""
        roles = {verdict.candidate.namespace: "dark", verdict.baseline.namespace: "active"}
        rules = {ns.namespace: {r.rule for r in ns.results}
                 for ns in (verdict.candidate, verdict.baseline)}
        judged = self._judged.get(verdict.pair, set())
        for collector, labels in list(judged):
            namespace, role = labels[1], labels[2]
            stale = roles.get(namespace) != role or (
                collector is not self.score and labels[3] not in rules.get(namespace, ()))
            if stale:
                collector.remove(*labels)
                judged.discard((collector, labels))

    def record_rules(self, pair: str, rules: Iterable[Rule]) -> None:
        """The rules a pair is judged by, with their targets (for the dashboards' rule table)."""
        for rule in rules:
            target = " and ".join(c.text for c in rule.pass_criteria)
            if rule.compare is not None:
                compare = (f"no significant {rule.compare.direction} "
                           f"> x{rule.compare.allowed_effect:g}")
                target = f"{target} and {compare}" if target else compare
            self.rule_info.labels(pair, rule.name, rule.source, str(rule.key).lower(),
                                  target).set(1)

    def forget_pair(self, pair: str) -> None:
        """Drop every series of the pair (a sharded replica whose shard moved away: the new
        owner exports them now, and two replicas must not both show the pair)."""
        for collector in vars(self).values():
            names = getattr(collector, "_labelnames", ())
            if not names or names[0] != "pair":
                continue
            for labels in list(collector._metrics):  # prometheus_client has no public lister
                if labels[0] == pair:
                    collector.remove(*labels)
        self._judged.pop(pair, None)

    def forget_namespace_roles(self, pair: str, namespaces: Iterable[str]) -> None:
        """Drop per-namespace series after a flip so a namespace never shows both roles."""
        dropped = set(namespaces)
        judged = self._judged.get(pair, set())
        for collector, labels in list(judged):
            if labels[1] in dropped:
                collector.remove(*labels)
                judged.discard((collector, labels))

    # -- lifecycle ----------------------------------------------------------------------------

    def record_phase(self, pair: str, phase: str, since: float, phases: Iterable[str]) -> None:
        """One-hot phase plus the time it was entered."""
        for name in phases:
            self.phase.labels(pair, name).set(1 if name == phase else 0)
        self.phase_since.labels(pair).set(since)

    def record_active(self, pair: str, active: str | None, namespaces: Iterable[str]) -> None:
        """Which namespace takes traffic (all 0 when the routes are inconsistent)."""
        for namespace in namespaces:
            self.active.labels(pair, namespace).set(1 if namespace == active else 0)

    def record_replicas(self, pair: str, namespace: str, replicas: int) -> None:
        """Desired replicas of a namespace (the old one should go to 0 or N)."""
        self.replicas.labels(pair, namespace).set(replicas)

    def record_flip(self, pair: str, trigger: str) -> None:
        """A flip happened."""
        self.flips.labels(pair, trigger).inc()

    def record_rollback(self, pair: str, trigger: str) -> None:
        """A rollback happened."""
        self.rollbacks.labels(pair, trigger).inc()

    def record_notification(self, receiver: str, kind: str, outcome: str) -> None:
        """A message sent, failed after its retries, or dropped (labels: never the URL)."""
        self.notifications.labels(receiver, kind, outcome).inc()

    def record_state_unreadable(self, pair: str) -> None:
        """The pair's stored state could not be read; it was rebuilt from the routes."""
        self.state_unreadable.labels(pair).inc()

    def record_refused(self, pair: str, action: str) -> None:
        """An action was refused by a precondition or the policy."""
        self.actions_blocked.labels(pair, action).inc()

    # -- the service itself -------------------------------------------------------------------

    def observe_evaluation(self, seconds: float) -> None:
        """Duration of one evaluation cycle."""
        self.evaluation_duration.observe(seconds)

    def record_source(self, source: str, *, up: bool, errors: int = 0) -> None:
        """Whether a source answered, and how many of its calls failed."""
        self.source_up.labels(source).set(1 if up else 0)
        counter = self.source_errors.labels(source)  # exists at 0, so rate() reads 0
        if errors:
            counter.inc(errors)

    def record_webhook(self, outcome: str) -> None:
        """One Alertmanager webhook request and what became of it."""
        self.webhook.labels(outcome).inc()

    def observe_action_latency(self, action: str, seconds: float) -> None:
        """Trigger to route patched and verified."""
        self.action_latency.labels(action).observe(seconds)

    def record_leader(self, is_leader: bool) -> None:
        """Whether this replica leads."""
        self.leader.set(1 if is_leader else 0)
