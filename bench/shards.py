"""Benchmark: sharded replicas (`sharding.enabled`) over one fleet of pairs.

One emulated API server seeded with N pairs (two namespaces, a Deployment each, one
IngressRoute), a SyntheticFleet exporting their series, a real Prometheus scraping it, and
1, 2 and 4 `gatekeeper serve` processes (one after the other, each group with its own ring
of Leases and its own state ConfigMap) judging the pairs with the shipped Prometheus rules.
Per group, over a measuring window after every replica finished a first tick:

- cycle time per replica: `gatekeeper_evaluation_duration_seconds` (reads of the pairs'
  routes and Deployments, then the evaluation), its mean over the window;
- PromQL queries per cycle: Prometheus's own count of /api/v1/query* requests, divided by
  the cycles the replicas ran;
- Kubernetes API requests per minute (all replicas together), from the emulator's count;
- resident memory of each replica;
- overlap: every replica's fenced shards (`/readyz` `shards`) are sampled about 5 times a
  second for the whole run, failover included; a pair in a shard that two replicas held in
  one sample counts as acted on by two (must be 0);
- state writes: pairs flipped through a replica that does not own them (forwarded), the
  PUTs of the state ConfigMap per flipped pair, their HTTP statuses, and the ConfigMap's
  size (each write replaces the whole object: the cost of one changed pair);
- failover: one replica SIGKILLed; seconds until the survivors hold every shard.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from bench import reporting, workers
from bench.fleet_worker import namespaces
from bench.reporting import Options, Outcome
from bench.service_stack import ROUTING, STATE_NAMESPACE, Pair, seed
from telemetry_sandbox import ManagedProcess, PrometheusServer, ScrapeTarget, httpjson

NAME = "shards"
PAIRS = 5000
QUICK_PAIRS = 200
REPLICAS = (1, 2, 4)
SHARDS = 16
PREFIX = "s"
SCRAPE_S = 5.0
WINDOW_S = 30.0
INTERVAL_S = 15.0
MEASURE_S = 60.0
QUICK_MEASURE_S = 20.0
FLIPS = 10
QUICK_FLIPS = 4
ELECTION = {"enabled": True, "lease_duration": "6s", "renew_deadline": "4s",
            "retry_period": "1s"}
READY_TIMEOUT_S = 900.0
STORED_TIMEOUT_S = 240.0
"""Past about 1,200 pairs the shared state ConfigMap passes the 1 MiB object limit and the
first-sight writes fail (422): the run goes on after this long, saying how many were stored."""


def _rules(directory: Path) -> Path:
    """The shipped rule file's Prometheus rules (the fleet exports what they read)."""
    document = yaml.safe_load((reporting.ROOT / "rules" / "default.yaml").read_text())
    document["rules"] = [r for r in document["rules"] if r["source"] == "prometheus"]
    path = directory / "prometheus-rules.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _pairs(count: int) -> list[Pair]:
    return [Pair(f"{PREFIX}{i:04d}", blue, green, f"{PREFIX}{i:04d}-live")
            for i, (blue, green) in enumerate(namespaces(count, PREFIX))]


def _config(all_pairs: list[Pair], *, ring: str, identity: str, work: Path,
            prometheus: str, rules: Path) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus, "timeout": "30s"},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(work / "kubeconfig"),
                       "request_timeout": "30s"},
        "evaluation": {"interval": f"{INTERVAL_S:g}s", "window": f"{WINDOW_S:g}s",
                       "source_timeout": "60s"},
        "rule_files": [str(rules)],
        "pairs": [{"name": p.name, "namespaces": [p.blue, p.green], "selector": "app=api",
                   "routes": [{"name": p.route, "namespace": ROUTING}]} for p in all_pairs],
        "policy": {"auto_flip": False, "auto_rollback": False},
        "auth": {"token_file": str(work / "token")},
        "server": {"host": "127.0.0.1"},
        "state": {"configmap": f"state-{ring}", "namespace": STATE_NAMESPACE},
        "leader_election": {**ELECTION, "lease_name": ring, "identity": identity,
                            "namespace": STATE_NAMESPACE},
        "sharding": {"enabled": True, "shards": SHARDS},
    }


def _replica(work: Path, all_pairs: list[Pair], *, ring: str, index: int, prometheus: str,
             rules: Path) -> ManagedProcess:
    path = work / f"{ring}-{index}.yaml"
    path.write_text(yaml.safe_dump(_config(all_pairs, ring=ring, identity=f"{ring}-{index}",
                                           work=work, prometheus=prometheus, rules=rules),
                                   sort_keys=False))
    # POD_IP: sharded replicas forward to http://$POD_IP:<port> (the port serve listens on).
    return ManagedProcess(f"gatekeeper {ring}-{index}", lambda port: [
        sys.executable, "-m", "gatekeeper", "serve", "--config", str(path),
        "--port", str(port)], ready_path="/healthz",
        env={**workers.env(), "POD_IP": "127.0.0.1"}, ready_timeout_s=READY_TIMEOUT_S)


def _metric(text: str, name: str) -> float:
    """Sum of every sample of a metric in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _get_text(url: str) -> str:
    # Generous: a replica busy with a tick over thousands of pairs answers late.
    return httpjson.request("GET", url, timeout_s=120)[1].decode()


def _prometheus_queries(prometheus: str) -> float:
    text = _get_text(f"{prometheus}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total")
               and re.search(r'handler="/api/v1/query(_range)?"', line))


def _readyz(url: str) -> dict[str, Any] | None:
    try:
        answer = httpjson.get_json(f"{url}/readyz", timeout_s=5)
    except (OSError, httpjson.HTTPStatusError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


class Sampler(threading.Thread):
    """Samples every live replica's fenced shards until stopped; records overlaps."""

    def __init__(self, replicas: list[ManagedProcess]) -> None:
        super().__init__(daemon=True)
        self.replicas = replicas
        self.samples = 0
        self.overlapping: set[int] = set()
        self.done = threading.Event()

    def held(self) -> dict[int, list[int]]:
        """shard -> replicas (indexes) holding it, as of now."""
        out: dict[int, list[int]] = {}
        for index, process in enumerate(self.replicas):
            if not process.is_running:
                continue
            answer = _readyz(process.url)
            for shard in (answer or {}).get("shards") or []:
                out.setdefault(int(shard), []).append(index)
        return out

    def run(self) -> None:
        while not self.done.is_set():
            held = self.held()
            self.samples += 1
            self.overlapping.update(s for s, who in held.items() if len(who) > 1)
            self.done.wait(0.2)


def _wait(predicate: Any, what: str, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"{what} not within {timeout_s:g}s")


def _snapshot(replicas: list[ManagedProcess], emulator: ManagedProcess,
              prometheus: str) -> dict[str, Any]:
    texts = [_get_text(f"{r.url}/metrics") for r in replicas]
    counts = httpjson.get_json(f"{emulator.url}/_emulator/requests?limit=0", timeout_s=120)
    return {"at": time.monotonic(),
            "cycles": [_metric(t, "gatekeeper_evaluation_duration_seconds_count")
                       for t in texts],
            "cycle_s": [_metric(t, "gatekeeper_evaluation_duration_seconds_sum")
                        for t in texts],
            "api_requests": counts["total"], "promql": _prometheus_queries(prometheus)}


def _state_puts(emulator: ManagedProcess, configmap: str, seen: set[tuple[float, str]],
                statuses: list[int]) -> None:
    """New PUTs of the state ConfigMap in the emulator's request log (polled, deduped)."""
    answer = httpjson.get_json(f"{emulator.url}/_emulator/requests?method=PUT"
                               f"&path=/configmaps/{configmap}", timeout_s=120)
    for record in answer["requests"]:
        key = (record["time"], record["path"])
        if key not in seen:
            seen.add(key)
            statuses.append(int(record["status"]))


def _group(count: int, all_pairs: list[Pair], *, work: Path, emulator: ManagedProcess,
           prometheus: str, rules: Path, token: str, options: Options) -> dict[str, Any]:
    ring = f"gk-r{count}"
    replicas = [_replica(work, all_pairs, ring=ring, index=i, prometheus=prometheus,
                         rules=rules) for i in range(count)]
    sampler = Sampler(replicas)
    with ExitStack() as stack:
        started = time.monotonic()
        for process in replicas:
            stack.enter_context(process)
        sampler.start()
        stack.callback(sampler.done.set)

        def split() -> bool:
            held = sampler.held()
            return sorted(held) == list(range(SHARDS)) and all(
                len(who) == 1 for who in held.values())

        _wait(split, "the replicas split the shards", READY_TIMEOUT_S)
        for process in replicas:
            _wait(lambda p=process: _metric(_get_text(f"{p.url}/metrics"),
                                            "gatekeeper_evaluation_duration_seconds_count")
                  >= 1, "a first tick", READY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        configmap = f"{emulator.url}/api/v1/namespaces/{STATE_NAMESPACE}/configmaps/state-{ring}"

        def stored() -> int:
            try:
                return len((httpjson.get_json(configmap, timeout_s=60) or {}).get("data") or {})
            except (httpjson.HTTPStatusError, OSError):
                return 0

        # Every pair's first-sight record written: from here on a PUT is a changed pair.
        try:
            _wait(lambda: stored() >= len(all_pairs), "every pair's state stored",
                  STORED_TIMEOUT_S)
        except TimeoutError:
            print(f"  shards: only {stored()} of {len(all_pairs)} pairs stored", flush=True)
        stored_s = time.monotonic() - started
        before = _snapshot(replicas, emulator, prometheus)
        seen: set[tuple[float, str]] = set()
        statuses: list[int] = []
        _state_puts(emulator, f"state-{ring}", seen, statuses)
        statuses.clear()
        flips, flip_s, served = FLIPS if not options.quick else QUICK_FLIPS, [], []
        rng = random.Random(count)
        auth = {"Authorization": f"Bearer {token}"}
        for pair in rng.sample(all_pairs, flips):
            via = replicas[rng.randrange(count)]
            sent = time.monotonic()
            try:
                status, _body = httpjson.request(
                    "POST", f"{via.url}/api/v1/pairs/{pair.name}/flip",
                    payload={"force": True, "reason": "bench"}, headers=auth, timeout_s=120)
            except httpjson.HTTPStatusError as exc:
                status = exc.status
            flip_s.append(time.monotonic() - sent)
            served.append(status)
            _state_puts(emulator, f"state-{ring}", seen, statuses)
        time.sleep(2 * INTERVAL_S)  # the ticks after the flips record their phase changes
        _state_puts(emulator, f"state-{ring}", seen, statuses)
        flip_statuses = list(statuses)
        window = QUICK_MEASURE_S if options.quick else MEASURE_S
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            time.sleep(2.0)
            _state_puts(emulator, f"state-{ring}", seen, statuses)
        after = _snapshot(replicas, emulator, prometheus)
        elapsed = after["at"] - before["at"]
        cycles = [a - b for a, b in zip(after["cycles"], before["cycles"], strict=True)]
        seconds = [a - b for a, b in zip(after["cycle_s"], before["cycle_s"], strict=True)]
        size = len(_get_text(configmap).encode())
        rss = [reporting.rss_mib(p.pid or 0).get("rss_mib") for p in replicas]
        failover_s = None
        if count >= 2:
            victim = replicas[-1]
            os.kill(victim.pid or 0, signal.SIGKILL)
            killed = time.monotonic()
            _wait(split, "the survivors took the killed replica's shards", 120)
            failover_s = time.monotonic() - killed
        sampler.done.set()
        sampler.join(10)
        overlapping_pairs = sum(1 for p in all_pairs
                                if _shard(p.name) in sampler.overlapping)
    row = {
        "replicas": count, "pairs": len(all_pairs), "ready_s": round(ready_s, 1),
        "window_s": round(elapsed, 1),
        "cycle_s_per_replica": [round(s / c, 2) if c else None
                                for s, c in zip(seconds, cycles, strict=True)],
        "cycles": cycles,
        "promql_per_cycle": round((after["promql"] - before["promql"]) / max(sum(cycles), 1),
                                  2),
        "api_requests_per_min": round((after["api_requests"] - before["api_requests"])
                                      / elapsed * 60),
        "rss_mib": rss,
        "flip_s": reporting.summary(flip_s), "flip_statuses": served,
        "stored_s": round(stored_s, 1),
        "state_puts_after_flips": len(flip_statuses),
        "state_put_statuses": sorted(set(flip_statuses)),
        "state_puts_per_flip": round(len(flip_statuses) / flips, 2),
        "state_puts_in_window": len(statuses) - len(flip_statuses),
        "state_configmap_bytes": size,
        "failover_s": None if failover_s is None else round(failover_s, 1),
        "samples": sampler.samples, "pairs_acted_on_by_two": overlapping_pairs,
    }
    print(f"  shards: {count} replica(s): {row}", flush=True)
    return row


def _shard(name: str) -> int:
    from gatekeeper import ring

    return ring.shard_of(name, SHARDS)


def run(options: Options) -> Outcome:
    """Fleet, Prometheus, emulator; then each replica count in turn."""
    count = QUICK_PAIRS if options.quick else int(os.environ.get("BENCH_SHARD_PAIRS", PAIRS))
    all_pairs = _pairs(count)
    fleet = workers.helper("fleet", "bench.fleet_worker",
                           ["--pairs", str(count), "--prefix", PREFIX])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:
        work = Path(scratch)
        rules = _rules(work)
        (work / "seed.yaml").write_text(yaml.safe_dump_all(seed(all_pairs)))
        token = secrets.token_hex(16)
        (work / "token").write_text(token)
        emulator = ManagedProcess("kube-emulator", lambda port: [
            sys.executable, "-m", "kube_emulator", "--port", str(port),
            "--objects", str(work / "seed.yaml"), "--kubeconfig-out", str(work / "kubeconfig"),
            "--request-log-size", "20000"], ready_path="/readyz", env=workers.env(),
            ready_timeout_s=READY_TIMEOUT_S)
        with fleet, emulator:
            target = ScrapeTarget("fleet", (f"127.0.0.1:{fleet.port}",), honor_labels=True)
            with PrometheusServer([target], scrape_interval_s=SCRAPE_S,
                                  evaluation_interval_s=SCRAPE_S) as prometheus:
                prometheus.wait_for_scrapes("fleet", timeout_s=120)
                time.sleep(WINDOW_S)  # a full rate() window before the first tick
                for replicas in REPLICAS:
                    rows.append(_group(replicas, all_pairs, work=work, emulator=emulator,
                                       prometheus=prometheus.url, rules=rules, token=token,
                                       options=options))
    return _outcome(rows, count)


def _outcome(rows: list[dict[str, Any]], count: int) -> Outcome:
    table = reporting.table(
        f"Sharded replicas: {count:,} pairs, {SHARDS} shards, 4 Prometheus rules, interval "
        f"{INTERVAL_S:g}s",
        ["replicas", "ready s", "stored s", "cycle s per replica", "PromQL/cycle", "API req/min",
         "RSS MiB", "flip p50 s", "state PUTs/flip", "PUT statuses", "ConfigMap KiB",
         "failover s", "pairs on two"],
        [[r["replicas"], r["ready_s"], r["stored_s"],
          " ".join(str(c) for c in r["cycle_s_per_replica"]),
          r["promql_per_cycle"], r["api_requests_per_min"],
          " ".join(str(m) for m in r["rss_mib"]), r["flip_s"].get("p50"),
          r["state_puts_per_flip"], ",".join(map(str, r["state_put_statuses"])),
          round(r["state_configmap_bytes"] / 1024), r["failover_s"] or "",
          r["pairs_acted_on_by_two"]] for r in rows])
    targets = {"pairs_acted_on_by_two": {
        "target": "== 0", "measured": [r["pairs_acted_on_by_two"] for r in rows]}}
    notes = [
        f"Leases: lease_duration {ELECTION['lease_duration']}, renew_deadline "
        f"{ELECTION['renew_deadline']}, retry_period {ELECTION['retry_period']}; failover "
        "is bounded by about one lease duration plus a retry period.",
        "Flips are POSTed to a random replica (forwarded to the owner when it is not).",
        "State: all pairs' records share one ConfigMap (the crd work moves each into its own "
        "object's status); every state write PUTs the whole ConfigMap.",
    ]
    return Outcome(results={"runs": rows, "shards": SHARDS, "election": ELECTION},
                   targets=targets, tables=[table], notes=notes)
