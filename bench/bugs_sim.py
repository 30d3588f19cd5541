"""Seeds needed for the simulator's own invariants to catch each planted bug.

Usage: python bench/bugs_sim.py [--budget 500] [--bug NAME ...]
Runs seeds 0, 1, 2, ... per bug until the first failure (or the budget) and prints, per bug, the
first failing seed, the invariant that caught it and the seeds run. Linearizability is checked
only when a history check is registered in voprd.sim.run.HISTORY_CHECKS.
"""

from __future__ import annotations

import argparse
import statistics
import time

from voprd.options import RunOptions
from voprd.sim.run import run_seed
from voprd.vsr.bugs import BUGS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--bug", action="append", default=[])
    args = parser.parse_args()
    needed: list[int] = []
    for bug in args.bug or list(BUGS):
        started = time.perf_counter()
        found = None
        seeds = 0
        for seed in range(args.budget):
            seeds += 1
            result, _ = run_seed(seed, RunOptions(bugs=(bug,)))
            if result.status == "failed":
                found = result
                break
        elapsed = time.perf_counter() - started
        if found is None:
            print(f"{bug:28} NOT CAUGHT in {seeds} seeds ({elapsed:.1f}s)", flush=True)
        else:
            needed.append(seeds)
            label = found.invariant or found.kind
            print(f"{bug:28} seed={found.seed:<5} by={label:18} seeds={seeds:<5} "
                  f"({elapsed:.1f}s)", flush=True)
    if needed:
        print(f"caught {len(needed)} bugs; median seeds {statistics.median(needed)}")


if __name__ == "__main__":
    main()
