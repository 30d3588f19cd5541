"""Seeds-to-detection of planted bugs: how many seeds a hunt needs, from any starting seed.

Usage: python bench/detection_sim.py [--bug NAME ...] [--start 0] [--count 500] [--workers 2]
                                     [--faults all] [--target builtin]
Runs each bug (default: every planted bug of the target) over seeds start..start+count-1 and
lists the seeds that fail. From a starting seed s, a hunt needs (next failing seed - s + 1) seeds,
so over the range: `first` is what `voprd selftest` needs from seed 0, `median` and `worst` are
the median and the largest over every starting seed in the range that has a failing seed after it
(the worst is the longest run of passing seeds plus one), `tail` the starting seeds at the end of
the range with none after them (their need is unknown: more than the seeds left). Also prints the
invariants that caught it. With `--faults` (e.g. every class but the bug's)
it shows whether a bug needs a fault class: then it should be caught nowhere.
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import statistics
import sys
import time

from voprd.events import SeedResult
from voprd.options import RunOptions, parse_faults
from voprd.sim.run import run_seed
from voprd.sim.system import System
from voprd.targets.loader import load_system


@functools.lru_cache(maxsize=1)
def _system(target: str) -> System:
    return load_system(target)


def _run(args: tuple[int, RunOptions]) -> SeedResult:
    return run_seed(args[0], args[1], _system(args[1].target))[0]


def distances(failing: list[int], start: int, count: int) -> list[int | None]:
    """Per starting seed in the range: the seeds a hunt from it needs (None: none fails)."""
    out: list[int | None] = []
    following = iter(sorted(failing))
    upcoming = next(following, None)
    for seed in range(start, start + count):
        while upcoming is not None and upcoming < seed:
            upcoming = next(following, None)
        out.append(None if upcoming is None else upcoming - seed + 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bug", action="append", default=[])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default="all")
    parser.add_argument("--target", default="builtin")
    args = parser.parse_args()
    system = load_system(args.target)
    bugs = args.bug or list(system.bugs)
    system.validate_bugs(bugs)
    faults = parse_faults(args.faults)
    print(f"target {args.target}  seeds {args.start}..{args.start + args.count - 1}  "
          f"faults={','.join(faults) or 'none'}")
    print(f"{'bug':28} {'caught':>7} {'first':>6} {'median':>7} {'worst':>6} {'tail':>5}  "
          "invariants")
    with multiprocessing.Pool(args.workers) as pool:
        for bug in bugs:
            started = time.perf_counter()
            options = RunOptions(target=args.target, faults=faults, bugs=(bug,))
            seeds = [(seed, options) for seed in range(args.start, args.start + args.count)]
            failing: list[int] = []
            caught_by: collections.Counter[str] = collections.Counter()
            for result in pool.imap(_run, seeds, chunksize=4):
                if result.status == "failed":
                    failing.append(result.seed)
                    caught_by[result.invariant or result.kind or "?"] += 1
            needed = distances(failing, args.start, args.count)
            known = [d for d in needed if d is not None]
            first = "-" if needed[0] is None else str(needed[0])
            median = f"{statistics.median(known):.0f}" if known else "-"
            worst = str(max(known)) if known else f">{args.count}"
            tail = needed.count(None)
            print(f"{bug:28} {len(failing):>7} {first:>6} {median:>7} {worst:>6} {tail:>5}  "
                  f"{dict(caught_by.most_common())} ({time.perf_counter() - started:.0f}s)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
