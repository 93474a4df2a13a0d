"""`python -m kube_emulator` / `kube-emulator`: run the emulated API server standalone.

Prints one line `kube-emulator listening on http://127.0.0.1:PORT` once it accepts
connections (scripts wait for it), optionally writes a kubeconfig, and runs until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from .emulator import Emulator
from .server import ensure_loopback, serve_until_signal


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="kube-emulator", description="Emulated Kubernetes API server (loopback only)."
    )
    parser.add_argument("--objects", type=Path, action="append", default=[],
                        help="YAML manifests to load at start (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    parser.add_argument("--ready-delay", type=float, default=0.0,
                        help="seconds before a new pod becomes Ready")
    parser.add_argument("--not-ready-on-load", action="store_true",
                        help="pods of loaded Deployments also wait --ready-delay")
    parser.add_argument("--bookmark-interval", type=float, default=1.0,
                        help="seconds between watch BOOKMARK events")
    parser.add_argument("--request-log-size", type=int, default=2000,
                        help="requests kept for GET /_emulator/requests (the oldest go first)")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig here")
    parser.add_argument("--namespace", default="default", help="kubeconfig context namespace")
    parser.add_argument("--seed", type=int, default=0, help="seed for names and faults")
    parser.add_argument("--log-level", default="warning", help="python logging level")
    parser.add_argument("--absent-group", action="append", default=[], metavar="GROUP",
                        help="serve as if this API group's CRDs were not installed "
                             "(e.g. traefik.containo.us); repeatable")
    return parser


async def _run(args: argparse.Namespace) -> None:
    emulator = Emulator(
        ready_delay=args.ready_delay,
        ready_on_load=not args.not_ready_on_load,
        bookmark_interval=args.bookmark_interval,
        seed=args.seed,
        request_log_size=args.request_log_size,
    )
    emulator.absent_groups.update(args.absent_group)
    for path in args.objects:
        emulator.load(path)

    def started(url: str) -> None:
        if args.kubeconfig_out is not None:
            emulator.write_kubeconfig(args.kubeconfig_out, namespace=args.namespace)
        print(f"kube-emulator listening on {url}", flush=True)

    await serve_until_signal(emulator, host=args.host, port=args.port, on_started=started)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kube-emulator` console script."""
    args = build_parser().parse_args(argv)
    try:
        ensure_loopback(args.host)
        for path in args.objects:
            if not path.is_file():
                raise ValueError(f"--objects file not found: {path}")
    except ValueError as exc:
        print(f"kube-emulator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
