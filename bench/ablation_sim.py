"""Ablation: is it the new verdicts and checks (issue 16) that catch a planted bug?

Runs the builtin VSR with a planted bug over a range of seeds, with the full simulator or with
one of the new mechanisms switched off, and counts the failing seeds (and by which invariant):

- `bound-verdicts`: a bound reached in the liveness phase passes and the safety phase has no event
  share (the engine as it was before: `max_events` only ended the run, listed in bounds_reached);
- `chain-checks`: no `log_chain` invariant in the harness and no hash-chain checks in the
  replicas (the VSR as it was before: entries appended and logs installed unchecked).

Usage: python bench/ablation_sim.py --bug NAME [--without bound-verdicts|chain-checks]
                                    [--start 0] [--count 2000] [--workers 2]
Prints the failing seeds' count, the invariants, the first failing seed and the median and
largest gap between failing seeds (seeds-to-detection from a random start).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import statistics
import sys
import time

from voprd.options import RunOptions
from voprd.sim.run import run_seed
from voprd.systems.vsr import VSR

ABLATIONS = ("none", "bound-verdicts", "chain-checks")


def _switch_off(ablation: str) -> None:
    """Switch one mechanism off in this (worker) process."""
    if ablation == "bound-verdicts":
        from voprd.sim import engine, phases
        from voprd.sim.trace import NODE_SIM

        def bound(self: engine.Simulation, name: str) -> None:
            if name not in self.bounds:
                self.bounds.append(name)
                self.note(NODE_SIM, engine._K_BOUND, len(self.bounds), 0, detail=name)

        engine.Simulation.bound = bound  # type: ignore[method-assign]
        phases.Phases.safety_events_max = staticmethod(lambda max_events: max_events)  # type: ignore[method-assign]
    elif ablation == "chain-checks":
        from voprd.systems.vsr import replica, system

        system.VsrCluster._check_chain = lambda self, r, entry, parent: None  # type: ignore[method-assign,assignment]
        replica.Replica._chains = lambda self, entry, parent: True  # type: ignore[method-assign]
        replica.Replica._log_chains = lambda self, log, same: True  # type: ignore[method-assign,assignment]


def _run(args: tuple[int, str]) -> tuple[int, str, str | None]:
    seed, bug = args
    result = run_seed(seed, RunOptions(bugs=(bug,) if bug else ()), VSR)[0]
    return seed, result.status, result.invariant


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", default="", help="planted bug (empty: the reference system)")
    parser.add_argument("--without", choices=ABLATIONS, default="none")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    failing: list[int] = []
    invariants: collections.Counter[str] = collections.Counter()
    seeds = [(seed, args.bug) for seed in range(args.start, args.start + args.count)]
    with multiprocessing.Pool(args.workers, initializer=_switch_off,
                              initargs=(args.without,)) as pool:
        for seed, status, invariant in pool.imap(_run, seeds, chunksize=4):
            if status != "ok":
                failing.append(seed)
                invariants[invariant or "?"] += 1
    failing.sort()
    gaps = [b - a for a, b in zip([args.start - 1, *failing], failing, strict=False)]
    print(f"bug {args.bug or '-'} without {args.without}: seeds {args.start}.."
          f"{args.start + args.count - 1}: {len(failing)} failed {dict(invariants)}; first "
          f"{failing[0] if failing else None}; gap median "
          f"{statistics.median(gaps) if gaps else None}, max {max(gaps) if gaps else None}; "
          f"{time.perf_counter() - started:.0f}s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
