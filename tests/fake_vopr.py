"""A fake external VOPR for the exec target's tests: `fake_vopr.py [FLAGS] --json --seed S -n N`.

By default it prints garbage between voprd-schema JSON lines and fails seeds ending in 4 (invariant
`agreement`). Flags make it misbehave the ways foreign binaries do:

--minimal        only the fields a foreign VOPR must print (type, data.seed/status/events; a failure
                 adds invariant and message), in the guide's shape, no timestamp/trace_hash
--fail-all       every seed fails the same assertion, its message full of seed-specific numbers,
                 paths, ids and durations (one cause, twenty different messages)
--hostile        also prints torn JSON, arrays, huge numbers, wrong types, foreign seeds,
                 duplicate reports and unknown line types
--die-at SEED    exit 3 on reaching SEED, without reporting it
--abort-at SEED  print a panic to stderr and abort (SIGABRT) on reaching SEED
--exit-code C    exit with C after the batch (voprd must ignore it: every seed was reported)
--linger         after the batch, keep running (sleep) instead of exiting
--grandchild DIR start a grandchild (`sleep 1000`, its pid written to DIR/<pid>) first
--hang           after starting the grandchild, sleep forever without reporting anything
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from voprd.events import IterationData, encode_event


def write(line: bytes | str, stream: str = "stdout") -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    data = line.encode() if isinstance(line, str) else line
    out.buffer.write(data + b"\n")
    out.flush()


def hostile(seed: int) -> None:
    write('{"type": "iteration", "data": {"seed": ')  # torn
    write("[1, 2, 3]")
    write('{"type": "iteration", "data": {"seed": 1' + "0" * 40 + ', "status": "ok"}}')
    write('{"type": "iteration", "data": {"seed": "seven", "status": "ok", "events": 1}}')
    write('{"type": "iteration", "data": {"seed": 99999999, "status": "ok", "events": 1}}')
    write('{"type": "iteration", "data": {"seed": -1, "status": "ok", "events": 1}}')
    write('{"type": "iteration", "data": [' * 5000 + "]" * 5000 + "}")
    write('{"type": "progress", "data": {"pct": 50}}')
    write('"just a string"')
    write("1e999")
    write(b"\xff\xfe binary \x00 noise")


def report(args: argparse.Namespace, seed: int) -> None:
    failed = args.fail_all or seed % 10 == 4
    if args.fail_all:
        message = (f"assertion failed: balance {seed * 7} < 0 at /tmp/build-{seed * 31}/src/"
                   f"ledger.rs:{100 + seed} after {seed + 1}.5s (seed {seed}, request "
                   f"{seed:08x}deadbeef)")
    else:
        message = f"op {seed} diverged"
    if args.minimal:
        data: dict[str, object] = {"seed": seed, "status": "failed" if failed else "ok",
                                   "events": 8000 + seed}
        if failed:
            data.update(invariant="linearizability" if args.fail_all else "agreement",
                        message=message)
        line = json.dumps({"type": "iteration", "data": data})
        if not args.hostile:
            write(line)
            return
        # A duplicate report; for seeds 2, 5, 8, ... the first one has an events of the wrong type.
        garbled = line.replace('"events": ', '"events": "many", "was": ')
        write(garbled if seed % 3 == 2 else line)
        write(line if seed % 3 == 2 else garbled)
        return
    write(encode_event("iteration", IterationData(
        seed=seed, status="failed" if failed else "ok", events=seed, simulated_time_ms=1,
        trace_hash=f"h{seed}", kind="invariant" if failed else None,
        invariant="agreement" if failed else None, message=message if failed else None,
    )))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("-v", action="store_true")
    parser.add_argument("--minimal", action="store_true")
    parser.add_argument("--fail-all", action="store_true")
    parser.add_argument("--hostile", action="store_true")
    parser.add_argument("--die-at", type=int, default=-1)
    parser.add_argument("--abort-at", type=int, default=-1)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--linger", action="store_true")
    parser.add_argument("--grandchild")
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    if args.grandchild:
        sleeper = subprocess.Popen(["sleep", "1000"])
        with open(os.path.join(args.grandchild, str(sleeper.pid)), "w"):
            pass
    if args.hang:
        time.sleep(1000)
    print("fake vopr starting; this line is not JSON", flush=True)
    if not args.minimal:
        write(encode_event("start", {"starting_seed": args.seed, "iterations": args.n}))
    for seed in range(args.seed, args.seed + args.n):
        if seed == args.die_at:
            print("{ torn json", flush=True)
            os._exit(3)
        if seed == args.abort_at:
            write(f"thread 'main' panicked at src/vopr.rs:{seed}: replica state corrupt", "stderr")
            os.abort()
        if args.hostile:
            hostile(seed)
        if args.v:
            print(f"seed {seed}: verbose trace line", flush=True)
        report(args, seed)
        print(f"garbage after seed {seed}", flush=True)
    if not args.minimal:
        write(encode_event("batch_complete", {"successes": args.n, "failures": 0}))
    if args.linger:
        time.sleep(1000)
    return int(args.exit_code)


if __name__ == "__main__":
    sys.exit(main())
