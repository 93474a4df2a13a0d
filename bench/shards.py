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
  state PUTs per flipped pair, their HTTP statuses, and the bytes one PUT carries. The
  pairs are BlueGreenPair objects (`BENCH_SHARD_STATE=objects`, the default): each pair's
  record is its own object's status, so a changed pair writes one small object. With
  `BENCH_SHARD_STATE=configmap` they are configured pairs sharing one state ConfigMap
  (every write replaces the whole map; past about 1,200 pairs it passes 1 MiB);
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import reporting, workers
from bench.fleet_worker import namespaces
from bench.reporting import Options, Outcome
from bench.service_stack import ROUTING, STATE_NAMESPACE, Pair, seed
from gatekeeper import crd
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
"""Short Leases for a quick failover; `BENCH_SHARD_LEASES=15s,10s,2s` (gatekeeper's defaults)
gives a replica busy with a tick over thousands of pairs room to renew in time."""


def _election() -> dict[str, Any]:
    raw = os.environ.get("BENCH_SHARD_LEASES")
    if not raw:
        return dict(ELECTION)
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3 or not all(p.removesuffix("s").replace(".", "", 1).isdigit()
                                  for p in parts):
        raise ValueError(f"BENCH_SHARD_LEASES={raw!r}: expected lease_duration,renew_deadline,"
                         "retry_period such as 15s,10s,2s")
    return {"enabled": True, "lease_duration": parts[0], "renew_deadline": parts[1],
            "retry_period": parts[2]}
READY_TIMEOUT_S = 900.0
STORED_TIMEOUT_S = 300.0
"""The run goes on after this long, saying how many first-sight records were stored (past
about 1,200 pairs the shared state ConfigMap passes the 1 MiB object limit: 422)."""
STORED_STALL_S = 60.0
REQUEST_LOG_SIZE = 50_000
POLL_S = 2.0
"""Between polls that read every pair (the stored records): each costs the emulator a list."""
OBJECTS_NAMESPACE = "pairs"
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml when PyYAML has it: a 5,000-pair seed is 25,000 documents."""
STATE_MODES = ("objects", "configmap")


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


def _spec(pair: Pair) -> dict[str, Any]:
    return {"namespaces": [pair.blue, pair.green], "selector": "app=api",
            "routes": [{"name": pair.route, "namespace": ROUTING}]}


def _pair_objects(all_pairs: list[Pair]) -> list[dict[str, Any]]:
    """The BlueGreenPair CRD as the chart installs it, and one object per pair."""
    definition = yaml.safe_load((reporting.ROOT / "helm" / "gatekeeper" / "crds"
                                 / f"{crd.CRD_NAME}.yaml").read_text())
    return [definition, *({"apiVersion": crd.API_VERSION, "kind": crd.KIND,
                           "metadata": {"name": p.name, "namespace": OBJECTS_NAMESPACE},
                           "spec": _spec(p)} for p in all_pairs)]


def _config(all_pairs: list[Pair], *, ring: str, identity: str, work: Path,
            prometheus: str, rules: Path, objects: bool) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus, "timeout": "30s"},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(work / "kubeconfig"),
                       "request_timeout": "30s"},
        "evaluation": {"interval": f"{INTERVAL_S:g}s", "window": f"{WINDOW_S:g}s",
                       "source_timeout": "60s"},
        "rule_files": [str(rules)],
        "pairs": [] if objects else [{"name": p.name, **_spec(p)} for p in all_pairs],
        "policy": {"auto_flip": False, "auto_rollback": False},
        "auth": {"token_file": str(work / "token")},
        "server": {"host": "127.0.0.1"},
        "state": {"configmap": f"state-{ring}", "namespace": STATE_NAMESPACE},
        "leader_election": {**_election(), "lease_name": ring, "identity": identity,
                            "namespace": STATE_NAMESPACE},
        "sharding": {"enabled": True, "shards": SHARDS},
    }


def _replica(work: Path, all_pairs: list[Pair], *, ring: str, index: int, prometheus: str,
             rules: Path, objects: bool) -> ManagedProcess:
    path = work / f"{ring}-{index}.yaml"
    path.write_text(yaml.safe_dump(_config(all_pairs, ring=ring, identity=f"{ring}-{index}",
                                           work=work, prometheus=prometheus, rules=rules,
                                           objects=objects), sort_keys=False))
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
    return httpjson.request("GET", url, timeout_s=300)[1].decode()


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


@dataclass(frozen=True)
class Reading:
    """One replica's fenced shards, read by a request sent at `sent`, answered at `answered`."""

    replica: int
    sent: float
    answered: float
    shards: frozenset[int]


def overlaps(readings: list[Reading], within_s: float) -> set[int]:
    """Shards that two replicas held at one same instant, as the readings prove it.

    Replicas are read one after the other, so A holding a shard and B holding it in one
    pass may be a hand-over between the two reads. It is proven simultaneous when A holds it
    in a reading answered before B's was sent and again in one sent after B's was answered,
    the two A readings less than `within_s` apart: A cannot lose a shard and get it back
    that fast (a hand-over and a hand-back take a Lease round each, `retry_period` apart),
    so A held it throughout, while B did too.
    """
    proven: set[int] = set()
    for b in readings:
        for shard in b.shards:
            before = [a for a in readings if a.replica != b.replica and shard in a.shards
                      and a.answered <= b.sent]
            after = [a for a in readings if a.replica != b.replica and shard in a.shards
                     and a.sent >= b.answered]
            if any(x.replica == y.replica and y.answered - x.sent < within_s
                   for x in before for y in after):
                proven.add(shard)
    return proven


class Sampler(threading.Thread):
    """Reads every live replica's fenced shards, in order and then again, until stopped;
    records the shards proven held by two at once (`overlaps`) and, apart, those merely
    seen on two in one pass (`coincident`: mostly hand-overs between two reads)."""

    def __init__(self, replicas: list[ManagedProcess], within_s: float) -> None:
        super().__init__(daemon=True)
        self.replicas = replicas
        self.within_s = within_s
        self.samples = 0
        self.overlapping: set[int] = set()
        self.coincident: set[int] = set()
        self.done = threading.Event()

    def readings(self) -> list[Reading]:
        """One reading of each live replica's fenced shards, in replica order."""
        out = []
        for index, process in enumerate(self.replicas):
            if not process.is_running:
                continue
            sent = time.monotonic()
            answer = _readyz(process.url)
            out.append(Reading(index, sent, time.monotonic(), frozenset(
                int(s) for s in (answer or {}).get("shards") or [])))
        return out

    def held(self) -> dict[int, list[int]]:
        """shard -> replicas (indexes) holding it, as of one pass."""
        out: dict[int, list[int]] = {}
        for reading in self.readings():
            for shard in reading.shards:
                out.setdefault(shard, []).append(reading.replica)
        return out

    def run(self) -> None:
        while not self.done.is_set():
            first = self.readings()
            second = self.readings()
            self.samples += 1
            seen: dict[int, int] = {}
            for reading in first:
                for shard in reading.shards:
                    seen[shard] = seen.get(shard, 0) + 1
            self.coincident.update(s for s, n in seen.items() if n > 1)
            self.overlapping.update(overlaps(first + second, self.within_s))
            self.done.wait(0.2)


def _wait(predicate: Any, what: str, timeout_s: float, *, every_s: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(every_s)
    raise TimeoutError(f"{what} not within {timeout_s:g}s")


def _metrics_text(replica: ManagedProcess) -> str | None:
    """A replica's /metrics; None when it does not answer in time (too busy: reported)."""
    try:
        return _get_text(f"{replica.url}/metrics")
    except (OSError, httpjson.HTTPStatusError):
        return None


def _snapshot(replicas: list[ManagedProcess], emulator: ManagedProcess,
              prometheus: str) -> dict[str, Any]:
    texts = [_metrics_text(r) for r in replicas]
    counts = httpjson.get_json(f"{emulator.url}/_emulator/requests?limit=0", timeout_s=120)
    return {"at": time.monotonic(),
            "cycles": [None if t is None else
                       _metric(t, "gatekeeper_evaluation_duration_seconds_count")
                       for t in texts],
            "cycle_s": [None if t is None else
                        _metric(t, "gatekeeper_evaluation_duration_seconds_sum")
                        for t in texts],
            "api_requests": counts["total"], "by_verb": counts["by_verb"],
            "promql": _prometheus_queries(prometheus)}


def _state_puts(emulator: ManagedProcess, where: str, seen: set[tuple[float, str]],
                statuses: list[int]) -> None:
    """New PUTs whose path contains `where` in the emulator's request log (polled, deduped)."""
    answer = httpjson.get_json(f"{emulator.url}/_emulator/requests?method=PUT&path={where}",
                               timeout_s=120)
    for record in answer["requests"]:
        key = (record["time"], record["path"])
        if key not in seen:
            seen.add(key)
            statuses.append(int(record["status"]))


def _matching_puts(emulator: ManagedProcess, where: str) -> tuple[int, int]:
    """How many recorded PUTs have `where` in their path, and how many requests the emulator
    received in all (the counts only, no records)."""
    answer = httpjson.get_json(f"{emulator.url}/_emulator/requests?method=PUT&path={where}"
                               "&limit=0", timeout_s=120)
    return int(answer["matched"]), int(answer["total"])


def _between(first: tuple[int, int], second: tuple[int, int]) -> int | None:
    """Matching PUTs between two `_matching_puts` counts taken since the request log was
    cleared; None once it held more than REQUEST_LOG_SIZE (the oldest were dropped)."""
    if second[1] > REQUEST_LOG_SIZE:
        return None
    return second[0] - first[0]


class StateView:
    """Where a group's pair records are and what one state write costs."""

    def __init__(self, emulator: ManagedProcess, ring: str, objects: bool) -> None:
        self.objects = objects
        self.configmap = (f"{emulator.url}/api/v1/namespaces/{STATE_NAMESPACE}/configmaps/"
                          f"state-{ring}")
        self.pair_objects = (f"{emulator.url}/apis/{crd.API_VERSION}/namespaces/"
                             f"{OBJECTS_NAMESPACE}/{crd.PLURAL}")
        self.every_put = f"/{crd.PLURAL}/" if objects else f"/configmaps/state-{ring}"
        """What the request-log paths of this group's state writes contain."""

    def puts_of(self, pair: Pair) -> str:
        """What the request-log paths of PAIR's state writes contain."""
        return f"/{crd.PLURAL}/{pair.name}/" if self.objects else self.every_put

    def stored(self) -> int:
        """How many pairs have a record."""
        try:
            if not self.objects:
                return len((httpjson.get_json(self.configmap, timeout_s=60) or {}).get("data")
                           or {})
            listing = httpjson.get_json(self.pair_objects, timeout_s=120) or {}
            return sum(1 for item in listing.get("items") or []
                       if crd.record_of(item.get("status")) is not None)
        except (httpjson.HTTPStatusError, OSError):
            return 0

    def write_bytes(self, pair: Pair) -> int:
        """The size of what one state write of PAIR sends: the whole ConfigMap, or the
        pair's object."""
        url = self.configmap if not self.objects else f"{self.pair_objects}/{pair.name}"
        return len(_get_text(url).encode())


def _group(count: int, all_pairs: list[Pair], *, work: Path, emulator: ManagedProcess,
           prometheus: str, rules: Path, token: str, options: Options,
           objects: bool) -> dict[str, Any]:
    ring = f"gk-r{count}"
    state = StateView(emulator, ring, objects)
    replicas = [_replica(work, all_pairs, ring=ring, index=i, prometheus=prometheus,
                         rules=rules, objects=objects) for i in range(count)]
    sampler = Sampler(replicas, _seconds(_election()["retry_period"]))
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
        # Every pair's first-sight record written: from here on a PUT is a changed pair.
        stored = _wait_stored(state, len(all_pairs))
        if stored < len(all_pairs):
            print(f"  shards: only {stored} of {len(all_pairs)} pairs stored", flush=True)
        stored_s = time.monotonic() - started
        # A clean request log: the state PUTs counted below are all still in it.
        httpjson.request("DELETE", f"{emulator.url}/_emulator/requests", timeout_s=120)
        before = _snapshot(replicas, emulator, prometheus)
        seen: set[tuple[float, str]] = set()
        statuses: list[int] = []
        flips, flip_s, served = FLIPS if not options.quick else QUICK_FLIPS, [], []
        rng = random.Random(count)
        auth = {"Authorization": f"Bearer {token}"}
        flipped = rng.sample(all_pairs, flips)
        # The flipped pairs' own state writes (objects mode: their objects' status; the
        # ConfigMap mode cannot tell pairs apart: every write of the map counts).
        wheres = sorted({state.puts_of(pair) for pair in flipped})

        def poll() -> None:
            for where in wheres:
                _state_puts(emulator, where, seen, statuses)

        poll()
        statuses.clear()
        every_before = _matching_puts(emulator, state.every_put)
        for pair in flipped:
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
            poll()
        time.sleep(2 * INTERVAL_S)  # the ticks after the flips record their phase changes
        poll()
        flip_statuses = list(statuses)
        every_flips = _matching_puts(emulator, state.every_put)
        window = QUICK_MEASURE_S if options.quick else MEASURE_S
        time.sleep(window)
        after = _snapshot(replicas, emulator, prometheus)
        elapsed = after["at"] - before["at"]
        cycles = [None if a is None or b is None else a - b
                  for a, b in zip(after["cycles"], before["cycles"], strict=True)]
        seconds = [None if a is None or b is None else a - b
                   for a, b in zip(after["cycle_s"], before["cycle_s"], strict=True)]
        every_window = _matching_puts(emulator, state.every_put)
        size = state.write_bytes(flipped[0])
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
        coincident_pairs = sum(1 for p in all_pairs if _shard(p.name) in sampler.coincident)
    row = {
        "replicas": count, "pairs": len(all_pairs), "ready_s": round(ready_s, 1),
        "window_s": round(elapsed, 1),
        "cycle_s_per_replica": [round(s / c, 2) if c and s is not None else None
                                for s, c in zip(seconds, cycles, strict=True)],
        "cycles": cycles,
        "promql_per_cycle": round((after["promql"] - before["promql"])
                                  / max(sum(c for c in cycles if c), 1), 2),
        "api_requests_per_min_by_verb": {
            verb: round((n - before["by_verb"].get(verb, 0)) / elapsed * 60)
            for verb, n in sorted(after["by_verb"].items())},
        "api_requests_per_min": round((after["api_requests"] - before["api_requests"])
                                      / elapsed * 60),
        "rss_mib": rss,
        "flip_s": reporting.summary(flip_s), "flip_statuses": served,
        "stored_s": round(stored_s, 1), "pairs_stored": stored,
        "state_puts_after_flips": len(flip_statuses),
        "state_put_statuses": sorted(set(flip_statuses)),
        "state_puts_per_flip": round(len(flip_statuses) / flips, 2),
        "state_puts_while_flipping": _between(every_before, every_flips),
        "state_puts_in_window": _between(every_flips, every_window),
        "state_write_bytes": size,
        "failover_s": None if failover_s is None else round(failover_s, 1),
        "samples": sampler.samples, "pairs_acted_on_by_two": overlapping_pairs,
        "pairs_seen_on_two_in_one_pass": coincident_pairs,
    }
    print(f"  shards: {count} replica(s): {row}", flush=True)
    return row


def _wait_stored(state: StateView, count: int) -> int:
    """Wait until COUNT pairs have a record, or STORED_TIMEOUT_S, or no new record came for
    STORED_STALL_S (some never come: the run goes on); returns how many have one."""
    started = last_growth = time.monotonic()
    stored = state.stored()
    while stored < count and time.monotonic() - started < STORED_TIMEOUT_S \
            and time.monotonic() - last_growth < STORED_STALL_S:
        time.sleep(POLL_S)
        now = state.stored()
        if now > stored:
            stored, last_growth = now, time.monotonic()
    return stored


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


def _shard(name: str) -> int:
    from gatekeeper import ring

    return ring.shard_of(name, SHARDS)


def run(options: Options) -> Outcome:
    """Fleet, Prometheus, emulator; then each replica count in turn."""
    count = QUICK_PAIRS if options.quick else int(os.environ.get("BENCH_SHARD_PAIRS", PAIRS))
    groups = tuple(int(n) for n in os.environ.get("BENCH_SHARD_REPLICAS", "").split(",")
                   if n.strip()) or REPLICAS
    mode = os.environ.get("BENCH_SHARD_STATE", STATE_MODES[0])
    if mode not in STATE_MODES:
        raise ValueError(f"BENCH_SHARD_STATE={mode!r}: expected one of {', '.join(STATE_MODES)}")
    objects = mode == "objects"
    all_pairs = _pairs(count)
    fleet = workers.helper("fleet", "bench.fleet_worker",
                           ["--pairs", str(count), "--prefix", PREFIX])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:
        work = Path(scratch)
        rules = _rules(work)
        manifests = seed(all_pairs) + (_pair_objects(all_pairs) if objects else [])
        (work / "seed.yaml").write_text(yaml.dump_all(manifests, Dumper=_DUMPER))
        token = secrets.token_hex(16)
        (work / "token").write_text(token)
        emulator = ManagedProcess("kube-emulator", lambda port: [
            sys.executable, "-m", "kube_emulator", "--port", str(port),
            "--objects", str(work / "seed.yaml"), "--kubeconfig-out", str(work / "kubeconfig"),
            "--request-log-size", str(REQUEST_LOG_SIZE)], ready_path="/readyz", env=workers.env(),
            ready_timeout_s=READY_TIMEOUT_S)
        with fleet, emulator:
            target = ScrapeTarget("fleet", (f"127.0.0.1:{fleet.port}",), honor_labels=True)
            with PrometheusServer([target], scrape_interval_s=SCRAPE_S,
                                  evaluation_interval_s=SCRAPE_S) as prometheus:
                prometheus.wait_for_scrapes("fleet", timeout_s=120)
                time.sleep(WINDOW_S)  # a full rate() window before the first tick
                for replicas in groups:
                    rows.append(_group(replicas, all_pairs, work=work, emulator=emulator,
                                       prometheus=prometheus.url, rules=rules, token=token,
                                       options=options, objects=objects))
    return _outcome(rows, count, mode)


def _outcome(rows: list[dict[str, Any]], count: int, mode: str) -> Outcome:
    election = _election()
    table = reporting.table(
        f"Sharded replicas: {count:,} pairs ({mode}), {SHARDS} shards, 4 Prometheus rules, "
        f"interval {INTERVAL_S:g}s",
        ["replicas", "ready s", "records stored in s", "cycle s per replica", "PromQL/cycle",
         "API req/min", "RSS MiB", "flip p50 s", "state PUTs/flip", "PUT statuses",
         "KiB per state PUT", "failover s", "pairs on two"],
        [[r["replicas"], r["ready_s"], f"{r.get('pairs_stored', '?')} in {r['stored_s']}",
          " ".join(str(c) for c in r["cycle_s_per_replica"]),
          r["promql_per_cycle"], r["api_requests_per_min"],
          " ".join(str(m) for m in r["rss_mib"]), r["flip_s"].get("p50"),
          r["state_puts_per_flip"], ",".join(map(str, r["state_put_statuses"])),
          round(r["state_write_bytes"] / 1024, 1), r["failover_s"] or "",
          r["pairs_acted_on_by_two"]] for r in rows])
    targets = {"pairs_acted_on_by_two": {
        "target": "== 0", "measured": [r["pairs_acted_on_by_two"] for r in rows]}}
    notes = [
        f"Leases: lease_duration {election['lease_duration']}, renew_deadline "
        f"{election['renew_deadline']}, retry_period {election['retry_period']}; failover "
        "is bounded by about one lease duration plus a retry period.",
        "Flips are POSTed to a random replica (forwarded to the owner when it is not).",
        "State: each pair's record in its BlueGreenPair's status (a write PUTs that object's "
        "status); records stay from one replica group to the next, as across a rollout."
        if mode == "objects" else
        "State: all pairs' records share one ConfigMap; every state write PUTs the whole "
        "ConfigMap (each group has its own).",
    ]
    return Outcome(results={"runs": rows, "shards": SHARDS, "election": election,
                            "state": mode},
                   targets=targets, tables=[table], notes=notes)
