"""`python -m bench [--only NAME ...] [--quick]`: run the benchmarks, print, write JSON."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench import reporting

BENCHMARKS = {
    "rollback": "bench.rollback",
    "detection": "bench.detection",
    "scale": "bench.scale",
    "verdict_api": "bench.verdict_api",
    "pod_logs": "bench.pod_logs",
    "webhook_flood": "bench.webhook_flood",
    "long_polls": "bench.long_polls",
    "judgment": "bench.judgment",
    "load": "bench.load",
    "shards": "bench.shards",
}
"""Benchmark name -> module with `run(options) -> Outcome`, in the order they run."""


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; exit 1 if any of them failed to run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer sizes and repetitions, results not written "
                             "unless --results is given")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"where to write <name>.json (default {reporting.RESULTS})")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="cProfile the measured gatekeeper process into DIR/<name>.prof "
                             "(figures are then not representative)")
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    options = reporting.Options(quick=args.quick, profile=args.profile)
    directory = args.results or (None if args.quick else reporting.RESULTS)
    selected = args.only or list(BENCHMARKS)
    machine = reporting.machine()
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"{machine['memory_gib']} GiB, load {machine['load_average']}", flush=True)
    failed = []
    started_all = time.monotonic()
    for name in selected:
        module = importlib.import_module(BENCHMARKS[name])
        print(f"\n== {name}", flush=True)
        started = time.time()
        try:
            outcome = module.run(options)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            continue
        for text in outcome.tables:
            print("\n" + text, flush=True)
        if directory is not None:
            path = reporting.write_result(name, outcome, started=started, options=options,
                                          directory=directory)
            print(f"\nwrote {path}", flush=True)
    print(f"\n{len(selected) - len(failed)}/{len(selected)} benchmarks ran in "
          f"{time.monotonic() - started_all:.0f} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
