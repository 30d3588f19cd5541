"""A fake external VOPR binary for the exec target's tests: `fake_vopr.py --json --seed S -n N`.

It prints garbage between its JSON lines, reports every seed, except that it dies (exit 3) when it
reaches FAKE_VOPR_DIE_AT without reporting it.
"""

from __future__ import annotations

import argparse
import os
import sys

from voprd.events import IterationData, encode_event


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("-n", type=int, required=True)
    args = parser.parse_args()
    die_at = int(os.environ.get("FAKE_VOPR_DIE_AT", "-1"))
    print("fake vopr starting; this line is not JSON", flush=True)
    for seed in range(args.seed, args.seed + args.n):
        if seed == die_at:
            print("{ torn json", flush=True)
            os._exit(3)
        failed = seed % 10 == 4
        data = IterationData(
            seed=seed, status="failed" if failed else "ok", events=seed, simulated_time_ms=1,
            trace_hash=f"h{seed}", kind="invariant" if failed else None,
            invariant="agreement" if failed else None,
            message=f"op {seed} diverged" if failed else None,
        )
        sys.stdout.buffer.write(encode_event("iteration", data) + b"\n")
        print(f"garbage after seed {seed}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
