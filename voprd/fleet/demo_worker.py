"""A small daemon stand-in that runs the real fleet coordinator over real S3 with a fake seed
function: used by the multi-process fleet test (and by hand, to watch a fleet work).

    python -m voprd.fleet.demo_worker --bucket B --run R --holder H --seed 0 -n 240 \
        --batch-size 10 --lease-seconds 2 --seed-ms 100 --fail-every 7 --log-dir DIR

Each seed sleeps `--seed-ms` and fails if seed % fail_every == 0. Every seed executed is appended
to DIR/seeds-{holder}.log; every coordinator event (claimed, renewed, lost, stopped, done) to
DIR/events-{holder}.jsonl. Failures of a batch whose done record we wrote are archived to
`failures/{run}/seed-{seed}.json` with If-None-Match, so a second archive would be visible.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec

from voprd.fleet.core import BatchSpace, PutOp, Timing, WriteReply
from voprd.fleet.runner import BatchResults, FleetCoordinator, Lease
from voprd.fleet.s3 import S3Store, create_client


def failure_key(run: str, seed: int) -> str:
    return f"failures/{run}/seed-{seed}.json"


class _Files:
    def __init__(self, log_dir: Path, holder: str) -> None:
        self.seeds: TextIO = open(log_dir / f"seeds-{holder}.log", "a", buffering=1)  # noqa: SIM115
        self.events: TextIO = open(  # noqa: SIM115
            log_dir / f"events-{holder}.jsonl", "a", buffering=1
        )

    def event(self, event: str, fields: dict[str, Any]) -> None:
        line = msgspec.json.encode({"event": event, "pid": os.getpid(), **fields}).decode()
        self.events.write(line + "\n")


async def amain(args: argparse.Namespace) -> int:
    files = _Files(Path(args.log_dir), args.holder)
    space = BatchSpace(seed_start=args.seed, batch_size=args.batch_size, seed_count=args.n)
    timing = Timing(lease_seconds=args.lease_seconds, takeover_margin_s=args.margin_s,
                    poll_s=args.poll_s)
    async with create_client() as client:
        store = S3Store(client, args.bucket)
        fleet = FleetCoordinator(store, run=args.run, holder=args.holder, space=space,
                                 timing=timing, observer=files.event)
        await fleet.start()

        async def execute(lease: Lease) -> BatchResults:
            started = time.time()
            failed: list[int] = []
            for seed in lease.seeds:
                await asyncio.sleep(args.seed_ms / 1000)
                files.seeds.write(f"{seed} {lease.batch} {time.time():.3f}\n")
                if args.fail_every and seed % args.fail_every == 0:
                    failed.append(seed)
            return BatchResults(successes=len(lease.seeds) - len(failed), failed_seeds=failed,
                                started_at_s=started)

        async def archive(lease: Lease, results: BatchResults) -> None:
            for seed in results.failed_seeds:
                reply = await store.execute(PutOp(
                    key=failure_key(args.run, seed), if_none_match=True,
                    body=msgspec.json.encode({"seed": seed, "holder": args.holder})))
                assert isinstance(reply, WriteReply)
                files.event("archived" if reply.ok else "archive_duplicate", {"seed": seed})

        await fleet.run_batches(execute, on_recorded=archive)
        files.event("exit", {"requests": store.requests})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voprd.fleet.demo_worker")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--run", default="default")
    parser.add_argument("--holder", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lease-seconds", type=float, default=2.0)
    parser.add_argument("--margin-s", type=float, default=1.5)
    parser.add_argument("--poll-s", type=float, default=0.3)
    parser.add_argument("--seed-ms", type=float, default=100.0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--log-dir", required=True)
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
