"""Soak: run a range of seeds with all faults on an engine target; every seed must pass.

Usage: python bench/soak_sim.py [--start 0] [--count 2000] [--workers 2] [--faults all]
                                [--target builtin] [--max-events N]
(a plugin such as the example: PYTHONPATH=examples ... --target abd_register:AbdRegister)
Prints each failing seed with its reproduce command, then a summary; exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
import time
from collections import Counter

from voprd.events import SeedResult
from voprd.options import DEFAULT_MAX_EVENTS, RunOptions, parse_faults, reproduce_command
from voprd.sim.run import run_seed
from voprd.sim.system import System
from voprd.targets.loader import load_system


@functools.lru_cache(maxsize=1)
def _system(target: str) -> System:
    return load_system(target)


def _run(args: tuple[int, RunOptions]) -> SeedResult:
    return run_seed(args[0], args[1], _system(args[1].target))[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default="all")
    parser.add_argument("--target", default="builtin")
    parser.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS)
    args = parser.parse_args()
    options = RunOptions(target=args.target, faults=parse_faults(args.faults),
                         max_events=args.max_events)
    started = time.perf_counter()
    failed: list[SeedResult] = []
    bounds: Counter[str] = Counter()
    events = 0
    seeds = [(seed, options) for seed in range(args.start, args.start + args.count)]
    with multiprocessing.Pool(args.workers) as pool:
        for result in pool.imap(_run, seeds, chunksize=8):
            events += result.events
            bounds.update(result.bounds_reached)
            if result.status != "ok":
                failed.append(result)
                print(f"FAILED seed {result.seed} {result.kind}/{result.invariant}: "
                      f"{(result.message or '').splitlines()[-1][:200]}\n  "
                      f"{reproduce_command(result.seed, options)}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"seeds {args.start}..{args.start + args.count - 1}: {args.count - len(failed)} ok, "
          f"{len(failed)} failed, events {events}, bounds reached {dict(bounds)}, "
          f"{elapsed:.1f}s wall with {args.workers} workers")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
