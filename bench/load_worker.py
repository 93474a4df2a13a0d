"""Worker of bench/load.py: gatekeeper's synthetic load driver alone in its own process.

`python -m bench.load_worker --port P --rate R --seconds S [--concurrency C]` sends the `load`
driver's requests at R/s for S seconds to `api-service.green.svc:8080`, mapped to
127.0.0.1:P (the app the parent serves), then prints one JSON line: requests sent,
checks answered and failed, skipped at the concurrency bound, and this process's CPU
seconds over the run (import and start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from gatekeeper.config import PairConfig
from gatekeeper.drivers import DriverTarget
from gatekeeper.drivers.load import LoadDriver, StaticResolver
from gatekeeper.metrics import Recorder
from gatekeeper.outcomes import Outcome


async def drive(port: int, rate: float, seconds: float, concurrency: int) -> dict[str, float]:
    pair = PairConfig.model_validate({
        "name": "bench", "namespaces": ["blue", "green"],
        "routes": [{"name": "live", "namespace": "routing"}],
        "load": {"url": "http://api-service.${namespace}.svc:8080", "rate": rate, "ramp": 0,
                 "concurrency": concurrency, "window": seconds + 5, "requests": [
                     {"path": "/api/franchises/lsu-tigers", "expect_json": {"id": "lsu-tigers"},
                      "max_latency": "2s"}]}})
    recorder = Recorder()
    driver = LoadDriver(recorder, window=seconds + 5, resolver=StaticResolver(
        {"api-service.green.svc:8080": f"127.0.0.1:{port}"}))
    target = DriverTarget(pair, "green", "blue", "bench",
                          variables={"namespace": "green", "other": "blue", "pair": "bench"})
    outcomes: list[Outcome] = []
    cpu, wall = time.process_time(), time.monotonic()
    task = asyncio.create_task(driver.run(target, outcomes.append))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    sample = recorder.registry.get_sample_value
    failed = sum(sample("gatekeeper_load_failed_total", {"pair": "bench", "reason": reason})
                 or 0.0 for reason in ("status", "json", "latency", "connect", "error"))
    last = outcomes[-1] if outcomes else None
    return {"sent": sample("gatekeeper_load_requests_total", {"pair": "bench"}) or 0.0,
            "skipped": sample("gatekeeper_load_skipped_total", {"pair": "bench"}) or 0.0,
            "failed": failed, "checked": float(last.samples) if last else 0.0,
            "cpu_s": cpu, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    answer = asyncio.run(drive(args.port, args.rate, args.seconds, args.concurrency))
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
