"""Benchmark 1, Alertmanager-triggered rollback latency.

`gatekeeper serve` runs against the emulated API server (both own processes, see
bench.service_stack) with 20 pairs and the shipped Kubernetes rules. Each round flips every
pair to green through the API, then sends, one at a time, Alertmanager's webhook payload for
a critical alert on each new active namespace, as Alertmanager would. Per rollback:

- response: webhook POST sent -> 200 answer received (the answer comes after the rollback,
  so this bounds "arrived -> route patched and verified" from above);
- patched / verified: POST sent -> the route's PATCH / the first GET of the route after it
  arriving at the emulated API server (its request log, same machine clock).

200 rollbacks are sent one at a time, 1 s apart, as alerts arrive (the tick woken by the
previous route change is over); five rounds after an uncounted warm-up round send 100 back
to back (each webhook lands while the tick woken by the previous route change runs); one
more round posts all 20 webhooks at once (a burst). Then the real
Alertmanager: alerts posted to its API, its webhook to gatekeeper, with `group_wait` 0 s and
its default 30 s; measured to the route's verifying GET, so what Alertmanager adds beyond
the direct webhook shows up as the difference.

Last, side by side at 20, 200 and 1,000 pairs (each its own emulator and `gatekeeper serve`,
one after the other): the seconds from start to the first evaluation of every pair, a
sample of pairs spread over the fleet flipped through the API, then rolled back by their
webhook one at a time, 1 s apart, measured as above; and what the service asks of the API
server while idle (requests per second, open watch streams).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import reporting, service_stack
from bench.reporting import Options, Outcome
from bench.service_stack import Pair, Stack
from telemetry_sandbox import AlertmanagerServer, make_alert
from telemetry_sandbox.alertmanager import WEBHOOK_RECEIVER

NAME = "rollback"
PAIRS = 20
ROUNDS = 5
QUICK_ROUNDS = 2
SPACED = 200
QUICK_SPACED = 5
SPACING_S = 1.0
"""Pause before each spaced rollback: longer than the tick a route change wakes (~0.5 s)."""
GROUP_WAITS = ((0.0, 10), (30.0, 3))
"""(group_wait seconds, alerts) for the runs through the real Alertmanager."""
QUICK_GROUP_WAITS = ((0.0, 3),)
SIZES = (20, 200, 1000)
"""Fleet sizes for the side-by-side run."""
SIZED_ROLLBACKS = 20
QUICK_SIZED_ROLLBACKS = 5
"""Pairs flipped and rolled back per size (spread over the fleet)."""
IDLE_S = 20.0
QUICK_IDLE_S = 10.0
FLIP_TIMEOUT_S = 120.0
"""A flip through the API that takes longer is reported as failed (the table's n drops)."""
"""Seconds of idle service over which its API request rate is counted."""
_sequence = itertools.count(1)


def kubernetes_rules(directory: Path) -> Path:
    """The shipped rule file with only its Kubernetes rules (no Prometheus needed here)."""
    document = yaml.safe_load((reporting.ROOT / "rules" / "default.yaml").read_text())
    document["rules"] = [r for r in document["rules"] if r["source"] == "kubernetes"]
    path = directory / "kubernetes-rules.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def payload(namespace: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one new critical alert on `namespace`."""
    n = next(_sequence)
    starts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "ApiErrorBudgetBurn", "severity": "critical", "namespace": namespace}
    return {
        "version": "4", "status": "firing", "receiver": WEBHOOK_RECEIVER,
        "groupKey": f'{{}}:{{alertname="ApiErrorBudgetBurn", namespace="{namespace}"}}',
        "truncatedAlerts": 0, "groupLabels": labels, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": f"{n:016x}"}],
    }


async def _flip(http: aiohttp.ClientSession, stack: Stack, pair: Pair) -> float:
    """Force the pair onto green; three tries (a 409 or 503 while the service is busy)."""
    for attempt in range(3):
        started = time.perf_counter()
        async with http.post(f"{stack.url}/api/v1/pairs/{pair.name}/flip",
                             json={"force": True, "reason": "bench"},
                             headers=stack.auth) as response:
            body = await response.json()
        if response.status == 200 and body.get("active") == pair.green:
            return time.perf_counter() - started
        if attempt == 2:
            raise RuntimeError(f"flip of {pair.name} failed: {response.status} {body}")
        await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _flip_all(http: aiohttp.ClientSession, stack: Stack, pairs: list[Pair]) -> list[float]:
    return [await _flip(http, stack, pair) for pair in pairs]


async def _route_times(http: aiohttp.ClientSession, stack: Stack, pair: Pair,
                       since: float) -> tuple[float | None, float | None]:
    """(PATCH arrival, first successful GET after it) for the pair's route after `since`."""
    async with http.get(f"{stack.emulator_url}/_emulator/requests",
                        params={"path": f"/{pair.route}", "limit": "50"}) as response:
        records = (await response.json())["requests"]
    patched = next((r["time"] for r in records
                    if r["method"] == "PATCH" and r["time"] >= since and r["status"] == 200),
                   None)
    if patched is None:
        return None, None
    verified = next((r["time"] for r in records if r["method"] == "GET"
                     and r["time"] > patched and r["status"] == 200), None)
    return patched, verified


async def _watch_route(http: aiohttp.ClientSession, stack: Stack, pair: Pair, since: float,
                       deadline: float) -> tuple[float | None, float | None]:
    """Poll the request log until the route's PATCH and verifying GET show up: the log is a
    ring of 2,000 requests, which the service's ticks overwrite within seconds."""
    patched = verified = None
    while time.time() < deadline:
        patched, verified = await _route_times(http, stack, pair, since)
        if verified is not None:
            break
        await asyncio.sleep(0.05)
    return patched, verified


async def _rollback(http: aiohttp.ClientSession, stack: Stack, pair: Pair) -> dict[str, Any]:
    sent = time.time()
    async with http.post(f"{stack.url}/api/v1/alertmanager", json=payload(pair.green),
                         headers=stack.auth) as response:
        body = await response.json()
    answered = time.time()
    outcome = body.get("outcome") if response.status == 200 else f"HTTP {response.status}"
    if outcome != "rollback":  # reported, not timed: the table's n shows what was lost
        print(f"  rollback: webhook for {pair.name} answered {response.status}: {body}",
              flush=True)
    return {"pair": pair.name, "sent": sent, "outcome": outcome,
            "response_s": answered - sent if outcome == "rollback" else None}


async def _with_route_times(http: aiohttp.ClientSession, stack: Stack, pair: Pair,
                            result: dict[str, Any]) -> dict[str, Any]:
    patched, verified = await _route_times(http, stack, pair, result["sent"])
    sent = result.pop("sent")
    result["patched_s"] = None if patched is None else patched - sent
    result["verified_s"] = None if verified is None else verified - sent
    return result


async def _server_histogram(http: aiohttp.ClientSession, stack: Stack) -> dict[str, float]:
    async with http.get(f"{stack.url}/metrics") as response:
        return _histogram(await response.text(), "rollback")


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The server histogram's count, sum and mean between two snapshots."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    total = after.get("sum", 0.0) - before.get("sum", 0.0)
    return {"count": count, "sum": total, "mean": total / count if count else float("nan")}


async def _direct(stack: Stack, pairs: list[Pair], rounds: int,
                  spaced: int) -> dict[str, Any]:
    flips: list[float] = []
    async with aiohttp.ClientSession() as http:
        await _flip_all(http, stack, pairs)  # warm-up round: connections, caches
        for pair in pairs:
            await _rollback(http, stack, pair)
        start = await _server_histogram(http, stack)
        quiet: list[dict[str, Any]] = []
        while len(quiet) < spaced:
            chosen = pairs[:spaced - len(quiet)]
            flips += await _flip_all(http, stack, chosen)
            for pair in chosen:
                await asyncio.sleep(SPACING_S)  # the tick woken by the last change is over
                result = await _rollback(http, stack, pair)
                quiet.append(await _with_route_times(http, stack, pair, result))
        middle = await _server_histogram(http, stack)
        sequential: list[dict[str, Any]] = []
        for _round in range(rounds):
            await _flip_all(http, stack, pairs)
            for pair in pairs:
                result = await _rollback(http, stack, pair)
                sequential.append(await _with_route_times(http, stack, pair, result))
        end = await _server_histogram(http, stack)
        await _flip_all(http, stack, pairs)
        sent = time.time()
        watches = [asyncio.create_task(_watch_route(http, stack, pair, sent, sent + 30))
                   for pair in pairs]
        answers = await asyncio.gather(*(_rollback(http, stack, pair) for pair in pairs))
        burst = []
        for answer, watch in zip(answers, watches, strict=True):
            patched, verified = await watch
            answer.pop("sent")
            burst.append({**answer, "patched_s": None if patched is None else patched - sent,
                          "verified_s": None if verified is None else verified - sent})
    return {"spaced": quiet, "sequential": sequential, "burst": burst, "flip_api_s": flips,
            "server_histogram": {"spaced": _delta(start, middle),
                                 "back_to_back": _delta(middle, end)}}


def _histogram(text: str, action: str) -> dict[str, float]:
    """count and sum of gatekeeper_action_latency_seconds{action=...} (server side)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("gatekeeper_action_latency_seconds_") and f'action="{action}"' in line:
            name = line.split("{", 1)[0].removeprefix("gatekeeper_action_latency_seconds_")
            if name in ("count", "sum"):
                out[name] = float(line.rsplit(" ", 1)[1])
    if out.get("count"):
        out["mean"] = out["sum"] / out["count"]
    return out


class TokenAlertmanager(AlertmanagerServer):
    """Alertmanager configured as the README says: a bearer token on the webhook."""

    def __init__(self, webhook_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(webhook_url, **kwargs)
        self.token = token

    def config(self) -> dict[str, Any]:
        """The sandbox's configuration plus `http_config.authorization`."""
        document = super().config()
        for receiver in document["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["http_config"] = {"authorization": {"type": "Bearer",
                                                         "credentials": self.token}}
        return document


async def _through_alertmanager(stack: Stack, pairs: list[Pair], group_wait: float,
                                count: int) -> list[dict[str, Any]]:
    results = []
    until = datetime.now(UTC) + timedelta(hours=1)
    server = TokenAlertmanager(f"{stack.url}/api/v1/alertmanager", stack.token,
                               group_wait_s=group_wait, group_interval_s=1.0,
                               repeat_interval_s=3600.0)
    with server:
        async with aiohttp.ClientSession() as http:
            chosen = pairs[:count]
            await _flip_all(http, stack, chosen)
            posted, watches = [], []
            for pair in chosen:  # one alert per second: each its own group and rollback
                sent = time.time()
                posted.append(sent)
                watches.append(asyncio.create_task(
                    _watch_route(http, stack, pair, sent, sent + group_wait + 30)))
                await asyncio.to_thread(server.post_alerts, [make_alert(
                    "ApiErrorBudgetBurn", pair.green, severity="critical", ends_at=until)])
                await asyncio.sleep(1.0)
            for pair, sent, watch in zip(chosen, posted, watches, strict=True):
                patched, verified = await watch
                results.append({
                    "pair": pair.name, "group_wait_s": group_wait,
                    "patched_s": None if patched is None else patched - sent,
                    "verified_s": None if verified is None else verified - sent,
                })
    return results


async def _run(options: Options) -> dict[str, Any]:
    rounds = QUICK_ROUNDS if options.quick else ROUNDS
    waits = QUICK_GROUP_WAITS if options.quick else GROUP_WAITS
    pairs = service_stack.pairs("rb", PAIRS)
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as scratch:
        rules = kubernetes_rules(Path(scratch))
        with service_stack.running(pairs, rule_file=rules,
                                   evaluation={"interval": "15s", "window": "60s"},
                                   policy={"auto_flip": False, "cooldown": "0s"},
                                   profile=options.profile and options.profile / "rollback.prof"
                                   ) as stack:
            direct = await _direct(stack, pairs, rounds,
                                   QUICK_SPACED if options.quick else SPACED)
            print(f"  rollback: {len(direct['spaced'])} spaced, {len(direct['sequential'])} "
                  f"back-to-back and {len(direct['burst'])} burst webhook rollbacks done",
                  flush=True)
            via = []
            for group_wait, count in waits:
                via += await _through_alertmanager(stack, pairs, group_wait, count)
                print(f"  rollback: through Alertmanager, group_wait {group_wait:g}s done",
                      flush=True)
        sizes = await _sizes(rules, options)
    return {**direct, "through_alertmanager": via, "by_size": sizes}


async def _emulator_counts(http: aiohttp.ClientSession, stack: Stack) -> dict[str, Any]:
    """Requests the emulated API server has answered (by verb) and its open watches."""
    async with http.get(f"{stack.emulator_url}/_emulator/requests",
                        params={"limit": "1"}) as response:
        counts = await response.json()
    async with http.get(f"{stack.emulator_url}/_emulator") as response:
        summary = await response.json()
    return {"total": counts["total"], "by_verb": counts["by_verb"],
            "open_watches": summary.get("openWatches")}


async def _recorded(http: aiohttp.ClientSession, stack: Stack, pairs: list[Pair],
                    timeout_s: float) -> float:
    """Wait until the state ConfigMap holds every pair (the first tick's writes); seconds."""
    started = time.monotonic()
    url = (f"{stack.emulator_url}/api/v1/namespaces/{service_stack.STATE_NAMESPACE}"
           "/configmaps/gatekeeper-state")
    names = {pair.name for pair in pairs}
    while time.monotonic() - started < timeout_s:
        async with http.get(url) as response:
            data = (await response.json()).get("data") or {} if response.status == 200 else {}
        if names <= set(data):
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise TimeoutError(f"not every pair's state was written within {timeout_s:g} s")


async def _at_size(stack: Stack, pairs: list[Pair], rollbacks: int,
                   idle_s: float) -> dict[str, Any]:
    """Idle API load, then flips and webhook rollbacks of a sample spread over the fleet."""
    step = max(1, len(pairs) // rollbacks)
    chosen = pairs[::step][:rollbacks]
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        recorded_s = await _recorded(http, stack, pairs, timeout_s=900.0)
        # The Lease may have lapsed meanwhile (at 1,000 pairs it did): lead again first.
        await asyncio.to_thread(service_stack.wait_leading, stack.url, timeout_s=300.0)
        leading_s = time.monotonic() - started - recorded_s
        before = await _emulator_counts(http, stack)
        await asyncio.sleep(idle_s)
        after = await _emulator_counts(http, stack)
        flips, flipped, failures = [], [], []
        for pair in chosen:  # a flip that fails is reported, and its pair not rolled back
            try:
                flips.append(await asyncio.wait_for(_flip(http, stack, pair), FLIP_TIMEOUT_S))
                flipped.append(pair)
            except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
                failures.append(f"flip of {pair.name}: {exc!r}"[:300])
                print(f"  rollback: {len(pairs)} pairs: {failures[-1]}", flush=True)
        results = []
        for pair in flipped:
            await asyncio.sleep(SPACING_S)
            result = await _rollback(http, stack, pair)
            sent = result["sent"]
            patched, verified = await _watch_route(http, stack, pair, sent, time.time() + 10)
            result.pop("sent")
            results.append({**result,
                            "patched_s": None if patched is None else patched - sent,
                            "verified_s": None if verified is None else verified - sent})
        evaluation = _evaluation_histogram(await _metrics_text(http, stack))
    verbs = {verb: (after["by_verb"].get(verb, 0) - before["by_verb"].get(verb, 0)) / idle_s
             for verb in sorted(set(after["by_verb"]) | set(before["by_verb"]))}
    return {"pairs": len(pairs), "rollbacks": results, "flip_api_s": flips,
            "state_recorded_s": recorded_s, "leading_again_s": leading_s,
            "failures": failures,
            "lease_lost": _lease_losses(lease_log := stack.gatekeeper.log_tail(400)),
            "lease_failures": lease_log.count('"lease request failed"'),
            "idle_requests_per_s": (after["total"] - before["total"]) / idle_s,
            "idle_requests_per_s_by_verb": verbs, "open_watches": after["open_watches"],
            "evaluation": evaluation}


def _lease_losses(log: str) -> int:
    """How often gatekeeper's log says it stopped leading (its last 400 lines; the info
    line when logged, else the warning about actions in flight)."""
    return max(log.count('"event": "stopped leading"'),
               log.count('"stopped leading with actions in flight"'))


async def _metrics_text(http: aiohttp.ClientSession, stack: Stack) -> str:
    async with http.get(f"{stack.url}/metrics") as response:
        return await response.text()


def _evaluation_histogram(text: str) -> dict[str, float]:
    """count, sum and mean of gatekeeper_evaluation_duration_seconds (one control-loop tick)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("count", "sum"):
            if line.startswith(f"gatekeeper_evaluation_duration_seconds_{name} "):
                out[name] = float(line.rsplit(" ", 1)[1])
    if out.get("count"):
        out["mean"] = out["sum"] / out["count"]
    return out


async def _sizes(rules: Path, options: Options) -> list[dict[str, Any]]:
    """Each fleet size in its own emulator and service, one after the other."""
    runs = []
    for size in SIZES:
        pairs = service_stack.pairs(f"n{size}", size)
        started = time.monotonic()
        with service_stack.running(pairs, rule_file=rules,
                                   evaluation={"interval": "15s", "window": "60s"},
                                   policy={"auto_flip": False, "cooldown": "0s"},
                                   ready_timeout_s=900.0, request_log_size=100_000) as stack:
            ready_s = time.monotonic() - started
            try:
                run = await _at_size(
                    stack, pairs, QUICK_SIZED_ROLLBACKS if options.quick else SIZED_ROLLBACKS,
                    QUICK_IDLE_S if options.quick else IDLE_S)
            except Exception:
                print(f"  rollback: {size} pairs failed; gatekeeper's log ends:\n"
                      f"{stack.gatekeeper.log_tail(30)}", flush=True)
                raise
            if run["failures"]:
                print(f"  rollback: {size} pairs: gatekeeper's log ends:\n"
                      f"{stack.gatekeeper.log_tail(12)}", flush=True)
        run["ready_s"] = ready_s
        outcomes = Counter(r["outcome"] for r in run["rollbacks"])
        print(f"  rollback: {size} pairs: ready in {ready_s:.0f} s, webhook outcomes "
              f"{dict(outcomes)}", flush=True)
        runs.append(run)
    return runs


def _size_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        verified = _figures(run["rollbacks"], "verified_s")
        response = _figures(run["rollbacks"], "response_s")
        flips = reporting.summary(run["flip_api_s"])
        evaluation = run["evaluation"]
        rows.append([
            run["pairs"], f"{run['ready_s']:.0f}", f"{run['state_recorded_s']:.0f}",
            run["open_watches"], run["lease_lost"],
            f"{run['idle_requests_per_s']:.0f}", f"{evaluation.get('mean', float('nan')):.2f}",
            flips.get("p50", float("nan")), response.get("count", 0),
            response.get("p50", float("nan")), verified.get("p50", float("nan")),
            verified.get("max", float("nan")),
        ])
    return reporting.table(
        "Rollback latency by fleet size (webhook 1 s apart; seconds)",
        ["pairs", "ready s", "+state s", "watches", "lease lost", "idle req/s", "tick mean s",
         "flip p50", "n", "answer p50", "verified p50", "verified max"], rows)


def _figures(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    return reporting.summary([r[key] for r in rows if r.get(key) is not None])


def run(options: Options) -> Outcome:
    """Direct webhook rollbacks, a burst, then through the real Alertmanager."""
    results = asyncio.run(_run(options))
    sequential, burst = results["sequential"], results["burst"]
    results["webhook_outcomes"] = dict(Counter(
        r["outcome"] for r in (*results["spaced"], *sequential, *burst)))
    rows = []
    for label, data in ((f"webhook, {SPACING_S:g}s apart", results["spaced"]),
                        ("webhook, back to back", sequential),
                        ("webhook, burst of 20", burst)):
        for key, what in (("response_s", "POST sent -> 200 answer"),
                          ("patched_s", "POST sent -> route PATCH arrives"),
                          ("verified_s", "POST sent -> verifying GET arrives")):
            figures = _figures(data, key)
            rows.append([label, what, figures.get("count", 0), figures.get("p50", float("nan")),
                         figures.get("p99", float("nan")), figures.get("max", float("nan"))])
    server = results["server_histogram"]["spaced"]
    for group_wait in sorted({r["group_wait_s"] for r in results["through_alertmanager"]}):
        data = [r for r in results["through_alertmanager"] if r["group_wait_s"] == group_wait]
        figures = _figures(data, "verified_s")
        rows.append([f"Alertmanager, group_wait {group_wait:g}s",
                     "alert posted -> verifying GET arrives", figures.get("count", 0),
                     figures.get("p50", float("nan")), figures.get("p99", float("nan")),
                     figures.get("max", float("nan"))])
    text = reporting.table(
        f"Rollback latency in seconds (server's own histogram, {SPACING_S:g}s apart: mean "
        f"{server.get('mean', float('nan')) * 1000:.1f} ms over {server.get('count', 0):.0f})",
        ["path", "measured", "n", "p50", "p99", "max"], rows)
    response = _figures(results["spaced"], "response_s")
    verified = _figures(results["spaced"], "verified_s")
    stressed = _figures(sequential, "verified_s")
    via_zero = _figures([r for r in results["through_alertmanager"]
                         if r["group_wait_s"] == 0.0], "verified_s")
    targets = {
        "webhook_rollback_p99_s": {"target": "<= 0.5", "measured_response_p99":
                                   response.get("p99"), "measured_verified_p99":
                                   verified.get("p99"), "rollbacks": response.get("count"),
                                   "back_to_back_verified_p99": stressed.get("p99")},
        "alertmanager_overhead_s": {
            "target": "report (group_wait is Alertmanager configuration)",
            "measured_group_wait_0_p50": via_zero.get("p50"),
            "minus_direct_verified_p50": (via_zero.get("p50", float("nan"))
                                          - verified.get("p50", float("nan")))},
    }
    notes = [
        "gatekeeper serve runs with the 2 shipped Kubernetes rules (pods-ready, "
        "container-restarts), a 15 s evaluation interval and leader election on; route "
        "changes wake its control loop, so ticks run alongside the webhooks as in production.",
        "The emulated API server's request log stamps each request when it arrives; "
        "'verified' is the first GET of the route after the PATCH (gatekeeper re-reads the "
        "route to verify the switch).",
        "Alertmanager runs: alerts one second apart, each in its own group (group_by "
        "alertname, namespace), group_interval 1 s; Alertmanager's default group_wait is 30 s.",
    ]
    targets["rollback_at_200_pairs_s"] = {
        "target": "report (issue 11: flips and rollbacks keep working past 24 pairs)",
        **{f"verified_p50_at_{run['pairs']}": _figures(run["rollbacks"], "verified_s").get("p50")
           for run in results["by_size"]}}
    notes.append("By fleet size: each size runs in its own emulator and gatekeeper serve; "
                 "'ready s' is start to the first evaluation of every pair and the Lease, "
                 "'+state s' the further wait until every pair's first state write is done "
                 "(one ConfigMap holds them all; writes are serialised), 'lease lost' how often "
                 "the replica stopped leading (the bench waits until it leads again), "
                 "'idle req/s' the API requests per second while nothing happens, 'tick' one "
                 "control-loop evaluation of every pair (its histogram's mean).")
    return Outcome(results=results, targets=targets,
                   tables=[text, _size_table(results["by_size"])], notes=notes)
