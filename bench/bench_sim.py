"""Simulator speed: simulated events per CPU-second and seeds per CPU-second on one core.

Usage: python bench/bench_sim.py [--start 0] [--count 300] [--faults all] [--target builtin]
                                [--profile]
CPU time is time.process_time() of this single process (one core), so other load on the machine
changes wall time but much less the figures. `--profile` prints the cProfile top functions.
Each seed is simulated with the history checks off, then its history is checked
(`check_linearizability`, exactly what `run_seed` does), both timed in the same run: the figures
are given sim-only and with the checker, and the checker's share of the CPU.

Machines are noisy, so the run also times a same-run reference: a bare `heapq` event loop (the
shape of the simulator's queue, no simulation behind it), before and after the seeds. The ratio
sim-only events/s : reference events/s is what to compare across machines and runs.
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import pstats
import statistics
import sys
import time

from voprd.options import DEFAULT_MAX_EVENTS, RunOptions, parse_faults
from voprd.sim import run as sim_run
from voprd.sim.linearizability import check_linearizability
from voprd.sim.system import System
from voprd.targets.loader import load_system

REFERENCE_EVENTS = 1_000_000
REFERENCE_TIMERS = 64


def reference_events_per_s(events: int = REFERENCE_EVENTS) -> float:
    """Events per CPU-second of a bare heapq loop: pop the earliest `(time_us, seq, kind, a, b)`
    tuple and push its successor at a pseudo-random later time (an LCG, no PRNG object)."""
    queue = [(t, t, 0, t, None) for t in range(REFERENCE_TIMERS)]
    heapq.heapify(queue)
    pop, push = heapq.heappop, heapq.heappush
    x = 1
    seq = REFERENCE_TIMERS
    started = time.process_time()
    for _ in range(events):
        time_us, _, kind, a, b = pop(queue)
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        seq += 1
        push(queue, (time_us + 1 + (x >> 50), seq, kind, a, b))
    return events / (time.process_time() - started)


def measure(start: int, count: int, options: RunOptions, system: System) -> None:
    reference_before = reference_events_per_s()
    per_seed_s: list[float] = []
    events = 0
    events_max = 0
    bounds = 0
    failed = 0
    sim_s = 0.0
    check_s = 0.0
    model = system.linearizability_model()
    checks = sim_run.HISTORY_CHECKS[:]
    sim_run.HISTORY_CHECKS.clear()
    try:
        for seed in range(start, start + count):
            seed_started = time.process_time()
            outcome = sim_run.simulate(seed, options, system)
            simulated = time.process_time()
            if outcome.result.status == "ok":
                failed += check_linearizability(outcome.history, model) is not None
            else:
                failed += 1
            checked = time.process_time()
            sim_s += simulated - seed_started
            check_s += checked - simulated
            per_seed_s.append(checked - seed_started)
            result = outcome.result
            events += result.events
            events_max = max(events_max, result.events)
            bounds += bool(result.bounds_reached)
    finally:
        sim_run.HISTORY_CHECKS[:] = checks
    reference = (reference_before + reference_events_per_s()) / 2
    total_s = sim_s + check_s
    per_seed_s.sort()
    print(f"python {sys.version.split()[0]}  target {options.target}  "
          f"seeds {start}..{start + count - 1}  "
          f"faults={','.join(options.faults) or 'none'}  max_events={options.max_events}")
    print(f"events {events}  cpu {total_s:.2f}s (sim {sim_s:.2f}s + checker {check_s:.2f}s, "
          f"checker {check_s / total_s:.1%})")
    print(f"sim-only:     events/s {events / sim_s:,.0f}  seeds/s {count / sim_s:.1f}")
    print(f"with checker: events/s {events / total_s:,.0f}  seeds/s {count / total_s:.1f}  "
          f"checker cpu/seed mean {check_s / count * 1000:.2f} ms")
    print(f"per-seed cpu: median {statistics.median(per_seed_s) * 1000:.1f} ms  "
          f"p99 {per_seed_s[int(len(per_seed_s) * 0.99) - 1] * 1000:.1f} ms  "
          f"max {per_seed_s[-1] * 1000:.1f} ms  events/seed mean {events / count:,.0f} "
          f"max {events_max:,}")
    print(f"seeds that reached a bound {bounds}  failed {failed}")
    print(f"reference (bare heapq loop, mean of before/after): events/s {reference:,.0f}  "
          f"sim-only / reference = {events / sim_s / reference:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--faults", default="all")
    parser.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS)
    parser.add_argument("--target", default="builtin", help="an engine-backed target")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    options = RunOptions(target=args.target, faults=parse_faults(args.faults),
                         max_events=args.max_events)
    system = load_system(args.target)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        measure(args.start, args.count, options, system)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        measure(args.start, args.count, options, system)


if __name__ == "__main__":
    main()
