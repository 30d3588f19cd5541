#!/usr/bin/env python3
"""A tiny VOPR that speaks voprd's JSON-lines protocol: a primary-backup counter, simulated.

    tiny_vopr.py --json --seed S -n N [-v]

Each seed is one deterministic run: three replicas hold a counter; a client sends increments to the
primary, which applies them, replicates them to the backups over a lossy network and acknowledges
the client. Now and then the primary crashes and a backup takes over. Planted bug: the new primary
is the lowest-numbered live backup, not the most up-to-date one, so on some seeds an acknowledged
increment is lost. The check at the end: the counter must be at least the number of acknowledged
increments (invariant `durability`). Each increment reaches one backup before it is acknowledged
and the others lazily, so only the planted bug can lose one.

It needs nothing but Python. It prints the guide's lines: `start`, one `iteration` per seed,
`batch_complete`; with -v a readable trace of each run goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import time

REPLICAS = 3
STEPS = 200


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def emit(kind: str, data: dict[str, object]) -> None:
    print(json.dumps({"timestamp": now(), "type": kind, "data": data}), flush=True)


def run(seed: int, verbose: bool) -> dict[str, object]:
    rng = random.Random(seed)  # everything random in this run comes from the seed
    counters = [0] * REPLICAS
    alive = [True] * REPLICAS
    primary = 0
    acknowledged = 0
    events = 0
    for step in range(STEPS):
        events += 1
        roll = rng.random()
        if roll < 0.02 and sum(alive) > 1:  # the primary crashes; a backup takes over
            alive[primary] = False
            live = [replica for replica in range(REPLICAS) if alive[replica]]
            # BUG (planted): the new primary must be the most up-to-date live backup,
            # max(live, key=lambda replica: counters[replica]); the lowest-numbered may lag.
            primary = min(live)
            for replica in live:  # the new primary brings the backups up to its state
                counters[replica] = max(counters[replica], counters[primary])
            if verbose:
                print(f"step {step}: primary crashed, {primary} takes over", file=sys.stderr)
        elif roll < 0.04:  # a crashed replica restarts and catches up from the primary
            for replica in range(REPLICAS):
                if not alive[replica]:
                    alive[replica] = True
                    counters[replica] = counters[primary]
        else:  # an increment: on the primary and one backup before the ack, lazily on others
            counters[primary] += 1
            backups = [r for r in range(REPLICAS) if r != primary and alive[r]]
            synced = rng.choice(backups) if backups else None
            for replica in backups:
                if replica == synced or rng.random() < 0.95:
                    events += 1
                    counters[replica] = counters[primary]
            acknowledged += 1
            if verbose:
                print(f"step {step}: increment acknowledged, counters {counters}", file=sys.stderr)
    result: dict[str, object] = {"seed": seed, "status": "ok", "events": events,
                                 "simulated_time_ms": STEPS * 10}
    if counters[primary] < acknowledged:
        result.update(status="failed", invariant="durability",
                      message=f"counter {counters[primary]} on primary {primary} is below the "
                              f"{acknowledged} acknowledged increments")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="JSON lines (the only output mode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", type=int, default=1, help="seeds S..S+N-1")
    parser.add_argument("-v", action="store_true", help="trace each run on stderr")
    args = parser.parse_args()
    started = time.monotonic()
    emit("start", {"starting_seed": args.seed, "iterations": args.n})
    failed: list[int] = []
    for seed in range(args.seed, args.seed + args.n):
        result = run(seed, args.v)
        if result["status"] != "ok":
            failed.append(seed)
        emit("iteration", result)
    elapsed = max(time.monotonic() - started, 1e-9)
    emit("batch_complete", {"successes": args.n - len(failed), "failures": len(failed),
                            "rate": round(args.n / elapsed, 1)})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
