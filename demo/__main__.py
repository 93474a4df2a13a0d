"""`python -m demo` (what `make demo` runs): start the stack, play the three acts, narrate,
draw the timeline, stop everything. Exit 0 only when every act behaved as the story says.

Exit codes: 0 every act passed; 1 an act failed (the narration says which and why);
2 the stack could not be started; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from demo import stack as stacks
from demo import story as stories
from demo import timeline
from demo.events import Record
from demo.narration import Narrator
from telemetry_sandbox import ProcessStartError
from telemetry_sandbox.httpjson import HTTPStatusError

BUDGET_S = 180.0
TEARDOWN_S = 12.0
"""Stopping the processes and drawing the picture, kept out of the acts' budget."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="gatekeeper's release loop on this machine: real Prometheus and "
                    "Alertmanager, an emulated cluster, three narrated acts.")
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"),
                        help="where timeline.png and the process logs go (default demo-output)")
    parser.add_argument("--keep-running", action="store_true",
                        help="after the story, keep everything up until Ctrl-C")
    parser.add_argument("--fast", action="store_true",
                        help="shorter windows and soak (the test suite uses this)")
    return parser


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT where a shell left it ignored) stop the demo like Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; see the module docstring for the exit codes."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    timing = stacks.FAST if args.fast else stacks.Timing()
    record = Record(started=time.time())
    deadline = record.started + BUDGET_S - TEARDOWN_S
    output: Path = args.output_dir
    print(f"gatekeeper demo: starting the stack on loopback (acts must finish by "
          f"+{deadline - record.started:.0f}s)", flush=True)
    try:
        with stacks.running(timing, deadline=math.inf if args.keep_running else deadline,
                            log_dir=output / "logs") as stack:
            return _play(stack, record, deadline, output, keep_running=args.keep_running)
    except (ProcessStartError, TimeoutError) as exc:
        print(f"\ndemo: the stack did not start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything was stopped", file=sys.stderr)
        return 130
    finally:
        print(f"demo: all processes stopped after {time.time() - record.started:.0f}s",
              flush=True)


def _play(stack: stacks.Stack, record: Record, deadline: float, output: Path, *,
          keep_running: bool) -> int:
    narrator = Narrator(stack, record)
    print("\nWhile it runs, open:")
    for name, url in stack.urls().items():
        print(f"  {name:<26} {url}")
    print(f"  process logs               {output / 'logs'}/ (after the run)")
    print(f"  throw-away directory       {stack.workdir} (removed at the end)", flush=True)
    narrator.start()
    results: list[stories.ActResult] = []
    failure = ""
    try:
        results = stories.play(stories.Story(stack, narrator, deadline=deadline))
    except (stories.ActFailed, OSError, HTTPStatusError) as exc:
        failure = f"PROLOGUE FAILED: {exc}"
        narrator.say("FAILED", failure)
    finally:
        narrator.stop()
    picture = _draw(stack, record, output)
    passed = (len(results) == len(stories.ACTS) and all(r.passed for r in results)
              and picture is not None)
    _summary(results, record, picture, passed, failure)
    if keep_running:
        print("\n--keep-running: everything stays up (URLs above); Ctrl-C stops it.",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\ndemo: Ctrl-C, stopping everything", flush=True)
    return 0 if passed else 1


def _draw(stack: stacks.Stack, record: Record, output: Path) -> Path | None:
    """The timeline picture from Prometheus' range API; a failure here is reported, not fatal
    to the verdict of the acts."""
    end = time.time()
    try:
        curves = timeline.fetch_curves(stack.prometheus.url, record.started, end)
        return timeline.render(output / "timeline.png", curves, record, end)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"demo: could not draw the timeline: {exc}", file=sys.stderr)
        return None


def _summary(results: list[stories.ActResult], record: Record, picture: Path | None,
             passed: bool, failure: str) -> None:
    print("\n=== Summary ===")
    for result in results:
        mark = "PASSED" if result.passed else "FAILED"
        print(f"  act {result.number} {mark} in {result.seconds:5.1f}s  {result.title}")
        print(f"      {result.summary}")
    if failure:
        print(f"  {failure}")
    for number, title, _ in stories.ACTS[len(results):]:
        print(f"  act {number} NOT PLAYED  {title}")
    print(f"  timeline picture: {picture if picture else 'not written'}")
    elapsed = time.time() - record.started
    verdict = "ALL ACTS PASSED" if passed else "DEMO FAILED"
    print(f"\n{verdict} ({elapsed:.0f}s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
