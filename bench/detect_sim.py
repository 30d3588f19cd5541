"""Seeds-to-detection of planted bugs: how many seeds a run needs to catch each bug, from any start.

Usage: python bench/detect_sim.py [--start 0] [--count 2000] [--workers 2] [--faults all]
                                  [--target builtin] [--bug NAME ...]
Runs every seed of the range with each planted bug (all of the target's by default) and lists the
seeds that fail. A run starting at seed s catches the bug after `first failing seed >= s` - s + 1
seeds: the median of that over every start s of the range (up to the last failing seed) and the
worst (the longest stretch without a failure, from the range's start or between failures) are
printed per bug. `voprd selftest` gives the first failing seed from 0 only; this gives the spread.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import statistics
import sys
import time
from collections import Counter

from voprd.options import RunOptions, parse_faults
from voprd.sim.run import run_seed
from voprd.sim.system import System
from voprd.targets.loader import load_system


@functools.lru_cache(maxsize=1)
def _system(target: str) -> System:
    return load_system(target)


def _run(args: tuple[int, RunOptions]) -> tuple[int, str | None]:
    seed, options = args
    result, _ = run_seed(seed, options, _system(options.target))
    return seed, (result.invariant or result.kind) if result.status != "ok" else None


def seeds_to_detection(start: int, failing: list[int]) -> tuple[float, int] | None:
    """(median, worst) seeds a run needs from each start up to the last failing seed."""
    if not failing:
        return None
    needed = []
    index = 0
    for s in range(start, failing[-1] + 1):
        while failing[index] < s:
            index += 1
        needed.append(failing[index] - s + 1)
    return statistics.median(needed), max(needed)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default="all")
    parser.add_argument("--target", default="builtin")
    parser.add_argument("--bug", action="append", default=[])
    args = parser.parse_args()
    system = load_system(args.target)
    bugs = args.bug or list(system.bugs)
    system.validate_bugs(bugs)
    faults = parse_faults(args.faults)
    seeds = range(args.start, args.start + args.count)
    with multiprocessing.Pool(args.workers) as pool:
        for bug in bugs:
            started = time.perf_counter()
            options = RunOptions(target=args.target, faults=faults, bugs=(bug,))
            results = pool.map(_run, [(seed, options) for seed in seeds], chunksize=8)
            failing = sorted(seed for seed, why in results if why is not None)
            caught_by = Counter(why for _, why in results if why is not None)
            spread = seeds_to_detection(args.start, failing)
            figures = ("never caught" if spread is None else
                       f"first seed {failing[0]}, median {spread[0]:g}, worst {spread[1]}")
            print(f"{bug:28} {len(failing):5} of {len(seeds)} fail; {figures}; "
                  f"by {dict(caught_by)} ({time.perf_counter() - started:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
