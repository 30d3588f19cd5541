"""Focus seeds at work: the run's seeds START.. and, after every `--focus-every` of them, a focus
seed chosen by the daemon's own coverage bandit (`voprd.core.coverage`: `CoverageTally`,
`FocusSource` over a `RunProgress`), run one at a time in one process (so the choices, and this
output, are deterministic). Prints per protocol path the share of the run's seeds and of the
focus seeds that exercised it, the focus seeds per family and, with `--bug`, how many seeds of
each kind failed (does focusing find a rare bug sooner?).

Usage: python bench/coverage_sim.py [--start 0] [--count 1000] [--focus-every 8]
                                    [--target builtin] [--bug NAME]
"""

from __future__ import annotations

import argparse
import sys
import time

from voprd.core.coverage import CoverageTally, FocusSource
from voprd.core.progress import RunProgress
from voprd.core.records import JournalRecord, RunFingerprint
from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.faults import SWARM_FAMILIES, is_focus_seed, seed_focus
from voprd.sim.run import run_seed
from voprd.targets.loader import load_system


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--focus-every", type=int, default=8)
    parser.add_argument("--target", default="builtin")
    parser.add_argument("--bug", default="")
    args = parser.parse_args()
    system = load_system(args.target)
    options = RunOptions(target=args.target, bugs=(args.bug,) if args.bug else ())
    fingerprint = RunFingerprint(
        first_seed=args.start, target=args.target, exec_cmd=None, faults=FAULT_CLASSES,
        max_events=options.max_events, bugs=options.bugs, check_determinism=False,
        voprd_version="bench")
    progress = RunProgress(run_id="bench", fingerprint=fingerprint,
                           end_seed=args.start + args.count)
    tally = CoverageTally(system.coverage_paths, list(SWARM_FAMILIES))
    source = FocusSource(progress, tally, args.focus_every)
    seen = {"run": 0, "focus": 0}
    hits: dict[str, dict[str, int]] = {"run": {}, "focus": {}}
    failed: dict[str, list[int]] = {"run": [], "focus": []}
    started = time.process_time()
    while not source.dispatch_exhausted:
        for seed in source.dispatch(1):
            result = run_seed(seed, options, system)[0]
            kind = "focus" if is_focus_seed(seed) else "run"
            seen[kind] += 1
            for path in result.coverage:
                hits[kind][path] = hits[kind].get(path, 0) + 1
            if result.status != "ok":
                failed[kind].append(seed)
            tally.observe(result, seed_focus(seed))
            if kind == "run":
                progress.record(JournalRecord(seed=seed, failed=result.status != "ok"))
    print(f"target {args.target}{' bug ' + args.bug if args.bug else ''}: run seeds "
          f"{args.start}..{args.start + args.count - 1} ({seen['run']}), focus seeds "
          f"{seen['focus']} (one after every {args.focus_every}); "
          f"{time.process_time() - started:.0f} s CPU")
    print(f"{'path':20} {'run seeds':>10} {'focus seeds':>12}")
    for path in tally.paths:
        run_share = hits["run"].get(path, 0) / max(seen["run"], 1)
        focus_share = hits["focus"].get(path, 0) / max(seen["focus"], 1)
        print(f"{path:20} {run_share:10.1%} {focus_share:12.1%}")
    arms = ", ".join(f"{f} {n}" for f, n in tally.arm_runs.items())
    print(f"focus seeds per family: {arms}")
    if args.bug:
        for kind in ("run", "focus"):
            print(f"failed {kind} seeds: {len(failed[kind])} of {seen[kind]} "
                  f"(first {failed[kind][:3]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
