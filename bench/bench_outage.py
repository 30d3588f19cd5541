"""Sink calls during an AWS outage: how long the simulation side waits on a sink.

Run from the repository root:  .venv/bin/python -m bench.bench_outage [--batches 200]

The AWS backend against a local moto server: each batch is what the daemon does per group of seeds
(a checkpoint save, a failure archived, an alert, a metrics minute, a log event), timed from the
first call to the last return; first with AWS up, then with the server stopped (connections
refused: botocore's retries take about a second per attempt, so a call that waited for AWS would
show it). The figure tests/test_aws_outage.py used to bound at 0.25 s; that test now checks instead
that no request is sent from the calling task, which holds on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _summary_ms(values_s: list[float]) -> str:
    ordered = sorted(values_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
            f"max {ordered[-1] * 1000:.2f} ms over {len(ordered)}")


async def batches(world: Any, server: Any, count: int) -> tuple[list[float], list[float]]:
    from tests.aws_records import aggregate, alert_text, checkpoint, failure_record
    from voprd.config import Settings
    from voprd.sinks.aws import AwsBackend, AwsTuning

    settings = Settings(bucket=world.bucket, sns_topic_arn=world.topic_arn,
                        log_group=world.log_group, region="us-east-1")
    minute0 = (int(time.time()) // 3600 - 2) * 3600
    with tempfile.TemporaryDirectory() as state_dir:
        backend = AwsBackend(settings, Path(state_dir), "i-bench", tuning=AwsTuning())
        await backend.start()

        async def one(seed: int) -> float:
            started = time.perf_counter()
            await backend.checkpoints.save(checkpoint(seed + 10))
            where = await backend.archive.put(failure_record(seed, unix_ts=1_790_000_000 + seed))
            await backend.alerts.send(*alert_text(seed, where))
            await backend.metrics.publish([aggregate(minute0 + 60 * seed, 10, 1, 100, [0.25])])
            backend.events.emit("batch_complete", "info", {"first_seed": seed})
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.01)  # the daemon's pace: the sender gets its turns
            return elapsed

        up = [await one(index * 10) for index in range(count)]
        await backend.flush()
        server.stop()
        try:
            down = [await one((count + index) * 10) for index in range(count)]
        finally:
            server.restart()
        await backend.flush()
        await backend.close()
    return up, down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    from tests.aws_fixtures import AWS_ENV, MotoServer, make_world

    server = MotoServer()
    server.start()
    os.environ.update(AWS_ENV)
    os.environ["AWS_ENDPOINT_URL"] = server.url
    import logging
    import warnings

    import structlog

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # watchtower's, on each refused delivery
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(
        file=open(os.devnull, "w")))  # noqa: SIM115 (the backend's events: not the figures)
    print(f"# sink calls during an AWS outage ({time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"load {os.getloadavg()[0]:.1f})")
    up, down = asyncio.run(batches(make_world(server), server, args.batches))
    print(f"one batch of sink calls, AWS up:   {_summary_ms(up)}")
    print(f"one batch of sink calls, AWS down: {_summary_ms(down)}")
    print(f"ratio of medians (down / up): {statistics.median(down) / statistics.median(up):.2f}")
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
