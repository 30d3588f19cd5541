"""Generate `vsr_golden.jsonl`: the builtin VSR's exact results on a fixed set of (seed, options).

Written from the code before the engine/system split (issue 12), regenerated when issue 16 landed
(the later fault families, even cluster sizes, client sessions and message checksums; bounds as
verdicts, hash-chain checks and bounded repair; the raw-byte disk with the disk class and the
VSR's storage design; the three branches merged): any later
refactoring of the engine must reproduce every entry bit for bit (status, events, simulated time,
trace hash, history, and for some entries the readable `-v` trace). `tests/test_sim_golden.py`
checks it. Regenerate only for a deliberate, explained change of the VSR's behaviour:

    .venv/bin/python tests/golden/make_vsr_golden.py > tests/golden/vsr_golden.jsonl
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator

import msgspec

from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.run import simulate
from voprd.sim.trace import format_event
from voprd.systems.vsr import VSR

VERBOSE_SEEDS = 20  # all-faults seeds whose readable trace is hashed too


def cases() -> Iterator[tuple[int, RunOptions, bool]]:
    """(seed, options, hash the readable trace)."""
    for seed in range(300):
        yield seed, RunOptions(), seed < VERBOSE_SEEDS
    for seed in range(20):
        yield seed, RunOptions(faults=()), seed < 2
    for fault in FAULT_CLASSES:
        for seed in range(10):
            yield seed, RunOptions(faults=(fault,)), seed < 1
    for bug in VSR.bugs:
        for seed in range(8):
            yield seed, RunOptions(bugs=(bug,)), seed < 1
    for seed in range(5):
        yield seed, RunOptions(max_events=500), False


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def entry(seed: int, options: RunOptions, verbose: bool) -> dict[str, object]:
    outcome = simulate(seed, options, VSR, record_trace=verbose)
    result = outcome.result
    row: dict[str, object] = {
        "seed": seed,
        "faults": list(options.faults),
        "bugs": list(options.bugs),
        "max_events": options.max_events,
        "status": result.status,
        "kind": result.kind,
        "invariant": result.invariant,
        "events": result.events,
        "simulated_time_ms": result.simulated_time_ms,
        "trace_hash": result.trace_hash,
        "bounds_reached": list(result.bounds_reached),
        "history_hash": digest(msgspec.json.encode(outcome.history)),
        "environment": outcome.environment,
    }
    if verbose:
        lines = "".join(format_event(event) + "\n" for event in outcome.trace or [])
        row["verbose_trace_hash"] = digest(lines.encode())
        row["fault_counts"] = outcome.fault_counts
    if result.status != "ok":
        # A crash's message is a traceback naming this checkout's paths: keep its last line.
        message = result.message or ""
        row["message"] = message.strip().splitlines()[-1] if result.kind == "crash" else message
    return row


def main() -> int:
    for seed, options, verbose in cases():  # JSON lines: one entry per line
        sys.stdout.write(json.dumps(entry(seed, options, verbose), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
